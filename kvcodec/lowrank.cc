// Low-rank (truncated SVD) coding of a section, head by head.
//
// For a head X [rows, d] the best rank-k approximation in the least-squares sense is X V_k V_k^T,
// where V_k holds the top-k right singular vectors of X. They are the top-k eigenvectors of the
// d x d Gram matrix X^T X, and for head dims up to a few hundred an eigendecomposition of that
// small matrix is much cheaper than an SVD of the tall X. The Gram matrix is accumulated in
// float (a BLAS-3 product) and decomposed in double. Squaring X loses precision in the small
// singular values only, which are the ones we discard; the kept factors are stored as half
// floats anyway.
//
// Stored per head: A = X B [rows, k] then B = V_k [d, k], both row-major half floats. A is
// computed against the half-rounded B, the matrix the decoder will actually multiply by.
// Eigenvectors are only defined up to sign; each is flipped so that its largest-magnitude
// component (first one on ties) is positive, which makes the output reproducible.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"

namespace kvcodec {
namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

absl::Status CheckLowRankArgs(int rank, const SectionShape& shape) {
  if (rank < 1)
    return absl::InvalidArgumentError(absl::StrCat("low rank needs rank >= 1, got ", rank));
  if (shape.head_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim must be >= 1, got ", shape.head_dim));
  }
  for (int r : shape.rows_per_head) {
    if (r < 0) return absl::InvalidArgumentError("negative row count in section shape");
  }
  return absl::OkStatus();
}

}  // namespace

int EffectiveRank(int rank, int rows, int head_dim) {
  if (rank < 1 || rows < 1 || head_dim < 1) return 0;
  return std::min({rank, rows, head_dim});
}

size_t NumLowRankFactors(int rank, const SectionShape& shape) {
  size_t n = 0;
  for (int rows : shape.rows_per_head) {
    const int k = EffectiveRank(rank, rows, shape.head_dim);
    n += static_cast<size_t>(k) * (static_cast<size_t>(rows) + static_cast<size_t>(shape.head_dim));
  }
  return n;
}

absl::StatusOr<LowRankSection> LowRankEncode(int rank, const SectionShape& shape,
                                             std::span<const float> values) {
  if (absl::Status s = CheckLowRankArgs(rank, shape); !s.ok()) return s;
  if (values.size() != shape.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LowRankEncode got ", values.size(), " values for a section of ", shape.num_elements()));
  }
  // Non-finite input would turn the whole head's factors into NaN.
  for (float v : values) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError("low rank input is not finite");
  }
  const int d = shape.head_dim;
  LowRankSection lr;
  lr.factors.resize(NumLowRankFactors(rank, shape));
  uint16_t* out = lr.factors.data();
  const float* head = values.data();
  for (int rows : shape.rows_per_head) {
    const float* x = head;
    head += static_cast<size_t>(rows) * d;
    const int k = EffectiveRank(rank, rows, d);
    if (k == 0) continue;
    Eigen::Map<const RowMajorF> X(x, rows, d);

    Eigen::MatrixXf gram = Eigen::MatrixXf::Zero(d, d);
    gram.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose());
    const Eigen::MatrixXf gram_full = gram.selfadjointView<Eigen::Lower>();
    const Eigen::MatrixXd gram_d = gram_full.cast<double>();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(gram_d);
    if (solver.info() != Eigen::Success) {
      return absl::InternalError("eigendecomposition of the Gram matrix did not converge");
    }

    // Eigenvalues come in ascending order: the top k are the last k columns.
    RowMajorF b(d, k);
    for (int j = 0; j < k; ++j) {
      Eigen::VectorXd v = solver.eigenvectors().col(d - 1 - j);
      Eigen::Index imax = 0;
      v.cwiseAbs().maxCoeff(&imax);  // first index of the maximum on ties
      if (v(imax) < 0) v = -v;
      for (int c = 0; c < d; ++c) b(c, j) = HalfToFloat(FloatToHalf(static_cast<float>(v(c))));
    }
    const RowMajorF a = X * b;

    for (Eigen::Index i = 0; i < a.size(); ++i) {
      const float v = a.data()[i];
      // Factors are stored as half floats; a row norm beyond the half range cannot be stored.
      if (!(std::fabs(v) <= 65504.0f)) {
        return absl::InvalidArgumentError(
            "low rank factor exceeds the half-float range (|x| > 65504)");
      }
      *out++ = FloatToHalf(v);
    }
    for (Eigen::Index i = 0; i < b.size(); ++i) *out++ = FloatToHalf(b.data()[i]);
  }
  return lr;
}

absl::Status LowRankDecode(int rank, const SectionShape& shape, const LowRankSection& lr,
                           std::span<float> out) {
  if (absl::Status s = CheckLowRankArgs(rank, shape); !s.ok()) return s;
  // Sizes first: nothing below may read or write past the buffers.
  if (out.size() != shape.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LowRankDecode output has ", out.size(), " elements, section has ", shape.num_elements()));
  }
  const size_t want = NumLowRankFactors(rank, shape);
  if (lr.factors.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("low rank section has ", lr.factors.size(), " factors, expected ", want));
  }
  for (uint16_t h : lr.factors) {
    if ((h & 0x7c00u) == 0x7c00u) return absl::DataLossError("low rank factor is not finite");
  }
  const int d = shape.head_dim;
  const uint16_t* in = lr.factors.data();
  float* head = out.data();
  for (int rows : shape.rows_per_head) {
    float* y = head;
    head += static_cast<size_t>(rows) * d;
    const int k = EffectiveRank(rank, rows, d);
    if (k == 0) continue;
    RowMajorF a(rows, k), b(d, k);
    for (Eigen::Index i = 0; i < a.size(); ++i) a.data()[i] = HalfToFloat(*in++);
    for (Eigen::Index i = 0; i < b.size(); ++i) b.data()[i] = HalfToFloat(*in++);
    Eigen::Map<RowMajorF> Y(y, rows, d);
    Y.noalias() = a * b.transpose();
  }
  return absl::OkStatus();
}

}  // namespace kvcodec
