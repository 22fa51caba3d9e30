#include "client/eval/plot.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwire::eval {
namespace {

std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string BytesLabel(double b) {
  if (b >= 1e9) return absl::StrFormat("%.3gG", b / 1e9);
  if (b >= 1e6) return absl::StrFormat("%.3gM", b / 1e6);
  if (b >= 1e3) return absl::StrFormat("%.3gk", b / 1e3);
  return absl::StrFormat("%.3g", b);
}

struct Point {
  double x, y;
  const ConfigSummary* c;
};

}  // namespace

std::string PlotSvg(const EvalSummary& summary, std::string_view title) {
  constexpr double W = 860, H = 560, left = 80, right = 220, top = 50, bottom = 70;
  const double pw = W - left - right, ph = H - top - bottom;
  std::vector<Point> pts;
  for (const ConfigSummary& c : summary.configs) {
    const double y = summary.quality == Quality::kKl ? c.fidelity.mean_kl() : QualityValue(c, summary.quality);
    if (c.examples == 0 || !std::isfinite(y) || !(c.bytes_per_request > 0)) continue;
    pts.push_back({c.bytes_per_request, y, &c});
  }
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">%s</text>\n",
      W, H, W, H, left + pw / 2, Escape(title));
  if (pts.empty()) {
    svg += absl::StrFormat("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no data</text>\n</svg>\n",
                           left + pw / 2, top + ph / 2);
    return svg;
  }
  double xmin = pts[0].x, xmax = pts[0].x, ymin = pts[0].y, ymax = pts[0].y;
  for (const Point& p : pts) {
    xmin = std::min(xmin, p.x);
    xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y);
    ymax = std::max(ymax, p.y);
  }
  const bool logx = xmax / xmin > 20;
  auto tx = [&](double x) { return logx ? std::log10(x) : x; };
  double x0 = tx(xmin), x1 = tx(xmax);
  if (x1 - x0 < 1e-12) {
    x0 -= logx ? 0.5 : std::max(1.0, 0.5 * x0);
    x1 += logx ? 0.5 : std::max(1.0, 0.5 * x1);
  }
  const double xpad = 0.05 * (x1 - x0);
  x0 -= xpad;
  x1 += xpad;
  if (summary.quality != Quality::kKl && ymin >= 0 && ymax <= 1) {
    ymin = std::min(ymin, 0.0);
    ymax = 1.0;
  }
  if (ymax - ymin < 1e-12) {
    ymin -= 0.5;
    ymax += 0.5;
  }
  const double ypad = 0.05 * (ymax - ymin);
  const double y0 = ymin - ypad, y1 = ymax + ypad;
  auto sx = [&](double x) { return left + (tx(x) - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };

  // Axes, grid and ticks.
  svg += absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n",
                         left, top, pw, ph);
  for (int i = 0; i <= 5; ++i) {
    const double y = y0 + (y1 - y0) * i / 5;
    svg += absl::StrFormat(
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n",
        left, left + pw, sy(y), sy(y), left - 6, sy(y) + 4, y);
  }
  for (int i = 0; i <= 5; ++i) {
    const double t = x0 + (x1 - x0) * i / 5;
    const double x = logx ? std::pow(10.0, t) : t;
    const double px = left + (t - x0) / (x1 - x0) * pw;
    svg += absl::StrFormat(
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
        px, px, top, top + ph, px, top + ph + 18, BytesLabel(x));
  }
  std::string ylabel;
  switch (summary.quality) {
    case Quality::kTaskScore: ylabel = "task score"; break;
    case Quality::kAgreement: ylabel = "top-1 agreement with the full cache"; break;
    case Quality::kKl: ylabel = "mean KL from the full cache (nats, lower is better)"; break;
  }
  svg += absl::StrFormat(
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">bytes per request%s</text>\n"
      "<text transform=\"translate(20 %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
      left + pw / 2, H - 25, logx ? " (log scale)" : "", top + ph / 2, Escape(ylabel));

  // The front, then the points (front filled and labelled in the legend).
  std::vector<const Point*> front;
  for (const Point& p : pts) {
    if (p.c->pareto) front.push_back(&p);
  }
  std::sort(front.begin(), front.end(), [](const Point* a, const Point* b) { return a->x < b->x; });
  if (front.size() > 1) {
    svg += "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" points=\"";
    for (const Point* p : front) svg += absl::StrFormat("%.1f,%.1f ", sx(p->x), sy(p->y));
    svg += "\"/>\n";
  }
  for (const Point& p : pts) {
    svg += absl::StrFormat(
        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\" stroke=\"%s\" stroke-width=\"1.5\">"
        "<title>%s: %s bytes, %.4g</title></circle>\n",
        sx(p.x), sy(p.y), p.c->pareto ? 5 : 4, p.c->pareto ? "#c0392b" : "white",
        p.c->pareto ? "#c0392b" : "#2c3e50", Escape(p.c->label.name), BytesLabel(p.x), p.y);
  }
  double ly = top + 10;
  const double lx = left + pw + 16;
  svg += absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" font-weight=\"bold\">Pareto front</text>\n", lx, ly);
  for (const Point* p : front) {
    ly += 16;
    if (ly > top + ph) break;
    svg += absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" fill=\"#c0392b\">%s</text>\n", lx, ly,
                           Escape(p->c->label.name.substr(0, 30)));
    svg += absl::StrFormat(
        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" fill=\"#c0392b\">%s</text>\n",
        std::min(sx(p->x) + 7, left + pw - 4), sy(p->y) - 7,
        Escape(p->c->label.name.substr(0, 18)));
  }
  svg += absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" fill=\"#2c3e50\">o other configurations</text>\n",
                         lx, std::min(ly + 24, top + ph + 30));
  svg += "</svg>\n";
  return svg;
}

}  // namespace kvwire::eval
