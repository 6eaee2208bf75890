// Small SVG charts for the benchmark's report (line charts of curves, grouped bar charts),
// self-contained files a browser shows as they are: axes with "nice" ticks, labels with units,
// a legend, and a <title> on every mark so that hovering shows its value.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace draftwise {

struct LineSeries {
  std::string name;
  std::vector<double> x, y;  // same length
  int colour = -1;           // index into the palette; < 0: the series' own index
};

struct LineChart {
  std::string title, x_label, y_label;  // labels name the unit: "processed tokens", "τ (tokens per step)"
  std::vector<LineSeries> series;
  // A y axis over this range at least (e.g. 0 to 100 for percentages); none: the data's.
  std::optional<std::pair<double, double>> y_range;
  // A dot on every point, each series' smaller than the one before, so that equal points of
  // several series and one-point series show.
  bool markers = false;
};

struct BarChart {
  std::string title, x_label, y_label;
  std::vector<std::string> groups;        // along the x axis
  std::vector<std::string> series_names;  // one bar per series in every group
  std::vector<std::vector<double>> values;  // [series][group]; series s has colour s
  std::optional<double> reference;        // a dashed horizontal line (e.g. speed-up 1)
};

std::string render_line_chart(const LineChart& chart);
std::string render_bar_chart(const BarChart& chart);

// Up to about `count` round tick values (1, 2 or 5 × 10^k apart) covering [low, high].
std::vector<double> nice_ticks(double low, double high, int count = 5);

}  // namespace draftwise
