#include "tools/svg_chart.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace draftwise {

namespace {

// The plot area inside a fixed canvas; room on the left for tick labels, below for the
// x label (and rotated group names), on the right for the legend.
constexpr double kWidth = 860, kHeight = 470;
constexpr double kLeft = 70, kTop = 40, kRight = 200, kBottom = 100;
constexpr double kPlotWidth = kWidth - kLeft - kRight, kPlotHeight = kHeight - kTop - kBottom;

// Colour-blind-safe (Okabe–Ito), in order.
constexpr const char* kColours[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                    "#CC79A7", "#56B4E9", "#F0E442", "#000000"};
const char* colour(size_t i) { return kColours[i % std::size(kColours)]; }

std::string escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
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

// A tick's label: as few digits as the step needs.
std::string tick_label(double value, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  if (std::fabs(value) >= 1e6) return fmt::format("{:.3g}", value);
  return fmt::format("{:.{}f}", value, decimals);
}

struct Axis {
  double low = 0, high = 1;
  std::vector<double> ticks;
};

// An axis over [low, high] widened to its outer ticks.
Axis make_axis(double low, double high) {
  if (!(high > low)) {
    const double pad = low == 0 ? 1 : std::fabs(low) * 0.1;
    low -= pad;
    high += pad;
  }
  Axis axis;
  axis.ticks = nice_ticks(low, high);
  axis.low = std::min(low, axis.ticks.front());
  axis.high = std::max(high, axis.ticks.back());
  return axis;
}

std::string header(const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{3}</text>\n",
      kWidth, kHeight, kLeft, escape(title));
}

// The y axis with grid lines and tick labels, its label, and the x axis line.
std::string y_axis(const Axis& axis, const std::string& label) {
  std::string out;
  const double step = axis.ticks.size() > 1 ? axis.ticks[1] - axis.ticks[0] : 1;
  for (const double tick : axis.ticks) {
    const double y = kTop + kPlotHeight * (1 - (tick - axis.low) / (axis.high - axis.low));
    out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", kLeft, y,
                       kLeft + kPlotWidth, y);
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 6, y + 4,
                       tick_label(tick, step));
  }
  out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", kLeft, kTop,
                     kTop + kPlotHeight);
  out += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", kLeft,
                     kTop + kPlotHeight, kLeft + kPlotWidth);
  out += fmt::format(
      "<text x=\"16\" y=\"{0:.1f}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {0:.1f})\">{1}</text>\n",
      kTop + kPlotHeight / 2, escape(label));
  return out;
}

std::string x_label(const std::string& label) {
  return fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", kLeft + kPlotWidth / 2,
                     kHeight - 12, escape(label));
}

// Names and their palette indices.
std::string legend(const std::vector<std::string>& names, const std::vector<size_t>& colours) {
  std::string out;
  const double x = kLeft + kPlotWidth + 16;
  for (size_t i = 0; i < names.size(); ++i) {
    const double y = kTop + 8 + 20.0 * static_cast<double>(i);
    out += fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"14\" height=\"10\" fill=\"{}\"/>\n", x, y - 9,
                       colour(colours[i]));
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\">{}</text>\n", x + 20, y, escape(names[i]));
  }
  return out;
}

double y_of(const Axis& axis, double value) {
  return kTop + kPlotHeight * (1 - (value - axis.low) / (axis.high - axis.low));
}

}  // namespace

std::vector<double> nice_ticks(double low, double high, int count) {
  if (!std::isfinite(low) || !std::isfinite(high)) return {0.0, 1.0};
  if (high < low) std::swap(low, high);
  if (high == low) high = low + 1;
  const double rough = (high - low) / std::max(1, count);
  if (!std::isfinite(rough) || !(rough > 0)) return {low, high};  // a range too wide or too narrow to divide
  const double magnitude = std::pow(10.0, std::floor(std::log10(rough)));
  double step = magnitude;
  for (const double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * magnitude;
    if (step >= rough) break;
  }
  std::vector<double> ticks;
  const double first = std::floor(low / step) * step;
  if (!std::isfinite(first) || !std::isfinite(step) || !(step > 0)) return {low, high};
  for (double tick = first; tick <= high + step * 0.999; tick += step) {
    if (tick + step == tick || ticks.size() > 100) return {low, high};  // steps below the doubles' resolution
    ticks.push_back(std::fabs(tick) < step * 1e-9 ? 0.0 : tick);
    if (tick >= high) break;
  }
  if (ticks.size() < 2) return {low, high};
  return ticks;
}

std::string render_line_chart(const LineChart& chart) {
  double x_low = INFINITY, x_high = -INFINITY, y_low = INFINITY, y_high = -INFINITY;
  for (const LineSeries& series : chart.series) {
    for (size_t i = 0; i < std::min(series.x.size(), series.y.size()); ++i) {
      if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
      x_low = std::min(x_low, series.x[i]);
      x_high = std::max(x_high, series.x[i]);
      y_low = std::min(y_low, series.y[i]);
      y_high = std::max(y_high, series.y[i]);
    }
  }
  if (!std::isfinite(x_low)) x_low = 0, x_high = 1, y_low = 0, y_high = 1;
  if (chart.y_range) {
    y_low = std::min(y_low, chart.y_range->first);
    y_high = std::max(y_high, chart.y_range->second);
  }
  const Axis x_axis = make_axis(std::min(0.0, x_low), x_high);
  const Axis y_axis_range = make_axis(std::min(y_low, std::floor(y_low)), y_high);
  std::string out = header(chart.title) + y_axis(y_axis_range, chart.y_label);
  const double x_step = x_axis.ticks.size() > 1 ? x_axis.ticks[1] - x_axis.ticks[0] : 1;
  const auto x_of = [&](double value) {
    return kLeft + kPlotWidth * (value - x_axis.low) / (x_axis.high - x_axis.low);
  };
  for (const double tick : x_axis.ticks) {
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x_of(tick),
                       kTop + kPlotHeight + 18, tick_label(tick, x_step));
  }
  out += x_label(chart.x_label);
  std::vector<std::string> names;
  std::vector<size_t> colours;
  for (size_t s = 0; s < chart.series.size(); ++s) {
    const LineSeries& series = chart.series[s];
    names.push_back(series.name);
    colours.push_back(series.colour >= 0 ? static_cast<size_t>(series.colour) : s);
    std::string points;
    for (size_t i = 0; i < std::min(series.x.size(), series.y.size()); ++i) {
      if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
      points += fmt::format("{:.1f},{:.1f} ", x_of(series.x[i]), y_of(y_axis_range, series.y[i]));
    }
    out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>\n",
                       colour(colours.back()), points, escape(series.name));
    if (!chart.markers) continue;
    const double radius = std::max(2.0, 5.0 - 1.5 * static_cast<double>(s));
    for (size_t i = 0; i < std::min(series.x.size(), series.y.size()); ++i) {
      if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
      out += fmt::format(
          "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{:.1f}\" fill=\"{}\"><title>{} {:.4g}: "
          "{:.4g}</title></circle>\n",
          x_of(series.x[i]), y_of(y_axis_range, series.y[i]), radius, colour(colours.back()),
          escape(series.name), series.x[i], series.y[i]);
    }
  }
  return out + legend(names, colours) + "</svg>\n";
}

std::string render_bar_chart(const BarChart& chart) {
  double high = chart.reference.value_or(0.0), low = 0.0;
  for (const std::vector<double>& row : chart.values) {
    for (const double value : row) {
      if (!std::isfinite(value)) continue;
      high = std::max(high, value);
      low = std::min(low, value);
    }
  }
  const Axis axis = make_axis(low, high > low ? high : low + 1);
  std::string out = header(chart.title) + y_axis(axis, chart.y_label) + x_label(chart.x_label);
  const size_t groups = std::max<size_t>(chart.groups.size(), 1);
  const size_t bars = std::max<size_t>(chart.series_names.size(), 1);
  const double group_width = kPlotWidth / static_cast<double>(groups);
  const double bar_width = group_width * 0.8 / static_cast<double>(bars);
  const bool rotate = chart.groups.size() > 6;
  for (size_t g = 0; g < chart.groups.size(); ++g) {
    const double centre = kLeft + group_width * (static_cast<double>(g) + 0.5);
    const double y = kTop + kPlotHeight + 16;
    if (rotate) {
      out += fmt::format(
          "<text x=\"{0:.1f}\" y=\"{1:.1f}\" text-anchor=\"end\" transform=\"rotate(-30 {0:.1f} {1:.1f})\">{2}</text>\n",
          centre, y, escape(chart.groups[g]));
    } else {
      out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", centre, y,
                         escape(chart.groups[g]));
    }
    for (size_t s = 0; s < chart.series_names.size(); ++s) {
      if (s >= chart.values.size() || g >= chart.values[s].size() || !std::isfinite(chart.values[s][g])) continue;
      const double value = chart.values[s][g];
      const double x = kLeft + group_width * static_cast<double>(g) + group_width * 0.1 +
                       bar_width * static_cast<double>(s);
      const double top = y_of(axis, std::max(value, 0.0)), bottom = y_of(axis, std::min(value, 0.0));
      out += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} {}: {:.4g}</title></rect>\n",
          x, top, std::max(bar_width - 1, 1.0), bottom - top, colour(s), escape(chart.series_names[s]),
          escape(chart.groups[g]), value);
    }
  }
  if (chart.reference) {
    const double y = y_of(axis, *chart.reference);
    out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#444\" stroke-dasharray=\"6 4\"/>\n",
                       kLeft, y, kLeft + kPlotWidth, y);
  }
  std::vector<size_t> colours(chart.series_names.size());
  for (size_t s = 0; s < colours.size(); ++s) colours[s] = s;
  return out + legend(chart.series_names, colours) + "</svg>\n";
}

}  // namespace draftwise
