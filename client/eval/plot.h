// An SVG plot of quality against bytes per request, one point per configuration, with the
// Pareto front drawn as a line through its (filled, labelled) points. Written directly, so no
// plotting package is needed.
#pragma once

#include <string>
#include <string_view>

#include "client/eval/report.h"

namespace kvwire::eval {

// The x axis is logarithmic when the byte range spans more than a factor of 20. Configurations
// without a finite quality or without examples are left out. Text is XML-escaped.
std::string PlotSvg(const EvalSummary& summary, std::string_view title);

}  // namespace kvwire::eval
