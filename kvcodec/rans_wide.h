// Internal to kvcodec/rans.cc: the vectorised coder of 32-lane rANS streams (format version 3,
// see the top of rans.cc). Both directions give bit for bit what the scalar coder gives.
//
// Why 32 lanes: a SIMD decoder steps 8 lanes per instruction, but one step of one vector waits
// for the previous step of the same vector (table gather -> multiply -> renormalise, ~45
// cycles). 32 lanes are four independent vectors, and a column run's consecutive groups of 8
// rows belong to different vectors, so four such chains are in flight at once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvcodec::rans_wide {

inline constexpr int kLanes = 32;
inline constexpr uint32_t kSlots = 4096;  // the probability scale M

// True when the CPU can run DecodeRun and EncodeRun (AVX2) and tests have not turned them off.
bool Available();
// Tests turn the vectorised coder off to compare it with the scalar one.
void DisableForTesting(bool disabled);

// One context's slot table for DecodeRun: entry = symbol << 24 | (slot - cum) << 12 | freq for
// freq < 4096. A context whose only symbol has freq 4096 cannot be written this way; its
// decode steps leave the state unchanged and read no word, so callers fill such runs with the
// symbol instead.
void BuildSlotTable(const uint16_t* freq, int alphabet, uint32_t* table);

// Decodes `units` * 32 symbols of one table starting at a coded position that is a multiple of
// 32 (symbol k in lane k % 32), in coded order into out[0 .. 32 * units). `states` holds the 32
// lanes' states and is updated. The caller guarantees 64 * units readable bytes at p (the
// worst case: one word per symbol); returns p advanced past the words read.
const uint8_t* DecodeRun(const uint32_t* table, uint8_t* out, size_t units, const uint8_t* p,
                         uint32_t* states);

// One context's encoding constants for EncodeRun.
struct EncodeTable {
  uint32_t freq_cum[256];  // freq | cum << 16 (freq 4096 for a context's only symbol)
};
void BuildEncodeTable(const uint16_t* freq, int alphabet, EncodeTable* table);

// Encodes sym[0 .. 32 * units) of one table, coded positions that start at a multiple of 32
// (symbol k in lane k % 32), backwards like the scalar encoder: words go below `out`, which must
// have 16 writable bytes below the lowest word written; returns the new start of the words.
// `states` holds the 32 lanes' states and is updated.
uint8_t* EncodeRun(const EncodeTable& table, const uint8_t* sym, size_t units, uint8_t* out,
                   uint32_t* states);

// out[r * row_len + c] = in[c * rows + r] for r < rows, c < row_len (a column-major block of
// decoded symbols back to row-major order).
void Transpose(const uint8_t* in, size_t rows, size_t row_len, uint8_t* out);

}  // namespace kvcodec::rans_wide
