#pragma once
/// \file svg_plot.hpp
/// A small hand-written SVG line plot (no dependencies): linear x axis, log-10 y axis,
/// one polyline with markers per series, point labels, ticks, grid, axis titles, legend.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace sparq_eval {

struct plot_point {
  double x = 0, y = 0;
  std::string label;  ///< small text next to the marker (may be empty)
};

struct plot_series {
  std::string name;
  std::size_t color = 0;  ///< palette index
  bool dashed = false;
  std::string dash;  ///< explicit stroke-dasharray (overrides `dashed`), e.g. "2,3"
  int marker = 0;  ///< 0 circle, 1 square, 2 triangle, 3 diamond
  std::vector<plot_point> points;
};

struct plot_spec {
  std::string title, subtitle, x_title, y_title, legend_title;
  std::vector<plot_series> series;
};

namespace detail {

inline std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

inline std::string num(double v, int prec = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

/// "Nice" linear ticks covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target, double& step) {
  const double span = hi - lo > 0 ? hi - lo : 1.0;
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  std::vector<double> t;
  for (double v = std::floor(lo / step) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::fabs(v) < 1e-12 ? 0.0 : v);
  return t;
}

inline std::string log_label(double v) {
  char buf[32];
  const double e = std::log10(v);
  if (std::fabs(e - std::round(e)) < 1e-9 && (e < -3 || e > 3)) {
    std::snprintf(buf, sizeof buf, "1e%d", static_cast<int>(std::round(e)));
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

}  // namespace detail

inline std::string dash_attr(const plot_series& s) {
  const std::string d = !s.dash.empty() ? s.dash : s.dashed ? "7,5" : "";
  return d.empty() ? "" : " stroke-dasharray=\"" + d + "\"";
}

inline std::string render_svg(const plot_spec& p) {
  using detail::esc;
  using detail::num;
  static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                  "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  const double W = 900, H = 560;
  const double L = 86, R = 660, T = 78, B = 480;  // plot area

  // Data ranges.
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : p.series)
    for (const auto& pt : s.points) {
      if (!(pt.y > 0) || !std::isfinite(pt.y) || !std::isfinite(pt.x)) continue;
      xmin = std::min(xmin, pt.x), xmax = std::max(xmax, pt.x);
      ymin = std::min(ymin, pt.y), ymax = std::max(ymax, pt.y);
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 1e-3, ymax = 1;
  double xstep = 0;
  const double xpad = (xmax - xmin) * 0.06 + 1e-3;
  std::vector<double> xt = detail::nice_ticks(std::max(0.0, xmin - xpad), xmax + xpad, 6, xstep);
  const double x0 = xt.front(), x1 = xt.back() < xmax + xpad ? xt.back() + xstep : xt.back();
  if (xt.back() < x1 - 1e-12) xt.push_back(x1);
  // Log y: the data's range plus a margin, at least 0.8 decade tall.
  double ly0 = std::log10(ymin), ly1 = std::log10(ymax);
  const double grow = std::max(0.0, 0.8 - (ly1 - ly0)) / 2 + 0.08 * (ly1 - ly0) + 0.04;
  ly0 -= grow, ly1 += grow;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (R - L); };
  auto Y = [&](double y) { return B - (std::log10(y) - ly0) / (ly1 - ly0) * (B - T); };

  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"DejaVu Sans, Helvetica, Arial, "
    << "sans-serif\">\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << H << "\" fill=\"white\"/>\n";
  o << "<text x=\"" << (L + R) / 2 << "\" y=\"30\" text-anchor=\"middle\" font-size=\"17\" "
    << "font-weight=\"bold\" fill=\"#222\">" << esc(p.title) << "</text>\n";
  if (!p.subtitle.empty())
    o << "<text x=\"" << (L + R) / 2 << "\" y=\"52\" text-anchor=\"middle\" font-size=\"12\" "
      << "fill=\"#555\">" << esc(p.subtitle) << "</text>\n";
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << R - L << "\" height=\"" << B - T
    << "\" fill=\"#fbfbfb\" stroke=\"none\"/>\n";

  // Grid and ticks: y (log).
  o << "<g font-size=\"12\" fill=\"#333\">\n";
  const bool one_decade = ly1 - ly0 <= 1.6;
  for (int e = static_cast<int>(std::floor(ly0)); e <= static_cast<int>(std::ceil(ly1)); ++e) {
    for (int m = 1; m <= 9; ++m) {
      const double v = m * std::pow(10.0, e);
      const double lv = std::log10(v);
      if (lv < ly0 - 1e-9 || lv > ly1 + 1e-9) continue;
      const double y = Y(v);
      const bool major = m == 1,
                 labelled = major || (one_decade && (m == 2 || m == 3 || m == 5)) ||
                            ly1 - ly0 <= 0.6;
      o << "<line x1=\"" << L << "\" x2=\"" << R << "\" y1=\"" << num(y) << "\" y2=\"" << num(y)
        << "\" stroke=\"" << (major ? "#d0d0d0" : "#ececec") << "\" stroke-width=\"1\"/>\n";
      o << "<line x1=\"" << L - (major ? 6 : 3) << "\" x2=\"" << L << "\" y1=\"" << num(y)
        << "\" y2=\"" << num(y) << "\" stroke=\"#333\"/>\n";
      if (labelled)
        o << "<text x=\"" << L - 9 << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">"
          << detail::log_label(v) << "</text>\n";
    }
  }
  // x (linear).
  for (double v : xt) {
    const double x = X(v);
    o << "<line x1=\"" << num(x) << "\" x2=\"" << num(x) << "\" y1=\"" << T << "\" y2=\"" << B
      << "\" stroke=\"#e0e0e0\"/>\n";
    o << "<line x1=\"" << num(x) << "\" x2=\"" << num(x) << "\" y1=\"" << B << "\" y2=\""
      << B + 6 << "\" stroke=\"#333\"/>\n";
    const int prec = xstep >= 1 ? 0 : xstep >= 0.1 ? 1 : xstep >= 0.01 ? 2 : 3;
    o << "<text x=\"" << num(x) << "\" y=\"" << B + 21 << "\" text-anchor=\"middle\">"
      << num(v, prec) << "</text>\n";
  }
  o << "</g>\n";
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << R - L << "\" height=\"" << B - T
    << "\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.2\"/>\n";
  o << "<text x=\"" << (L + R) / 2 << "\" y=\"" << B + 50 << "\" text-anchor=\"middle\" "
    << "font-size=\"14\" fill=\"#222\">" << esc(p.x_title) << "</text>\n";
  o << "<text transform=\"translate(24," << (T + B) / 2 << ") rotate(-90)\" text-anchor=\"middle\" "
    << "font-size=\"14\" fill=\"#222\">" << esc(p.y_title) << "</text>\n";

  // Series.
  auto marker = [&](int kind, double x, double y, const char* col) {
    std::ostringstream m;
    const double r = 4.6;
    if (kind == 1)
      m << "<rect x=\"" << num(x - r) << "\" y=\"" << num(y - r) << "\" width=\"" << 2 * r
        << "\" height=\"" << 2 * r << "\"";
    else if (kind == 2)
      m << "<path d=\"M" << num(x) << "," << num(y - r - 1) << " L" << num(x + r + 0.5) << ","
        << num(y + r - 0.5) << " L" << num(x - r - 0.5) << "," << num(y + r - 0.5) << " Z\"";
    else if (kind == 3)
      m << "<path d=\"M" << num(x) << "," << num(y - r - 1) << " L" << num(x + r + 1) << ","
        << num(y) << " L" << num(x) << "," << num(y + r + 1) << " L" << num(x - r - 1) << ","
        << num(y) << " Z\"";
    else
      m << "<circle cx=\"" << num(x) << "\" cy=\"" << num(y) << "\" r=\"" << r << "\"";
    m << " fill=\"" << col << "\" stroke=\"white\" stroke-width=\"1.2\"/>\n";
    return m.str();
  };
  o << "<g>\n";
  for (const auto& s : p.series) {
    const char* col = palette[s.color % (sizeof palette / sizeof *palette)];
    std::vector<plot_point> pts;
    for (const auto& pt : s.points)
      if (pt.y > 0 && std::isfinite(pt.y)) pts.push_back(pt);
    std::sort(pts.begin(), pts.end(),
              [](const plot_point& a, const plot_point& b) { return a.x < b.x; });
    o << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2.2\" "
      << "stroke-linejoin=\"round\"" << dash_attr(s) << " points=\"";
    for (const auto& pt : pts) o << num(X(pt.x)) << "," << num(Y(pt.y)) << " ";
    o << "\"/>\n";
    for (const auto& pt : pts) {
      o << marker(s.marker, X(pt.x), Y(pt.y), col);
      if (!pt.label.empty())
        o << "<text x=\"" << num(X(pt.x) + 7) << "\" y=\"" << num(Y(pt.y) - 7)
          << "\" font-size=\"10\" fill=\"" << col << "\">" << esc(pt.label) << "</text>\n";
    }
  }
  o << "</g>\n";

  // Legend (right of the plot).
  const double lx = R + 22, ly = T;
  const double lh = 22.0 * static_cast<double>(p.series.size()) + (p.legend_title.empty() ? 12 : 36);
  o << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"" << W - lx - 12 << "\" height=\""
    << lh << "\" fill=\"white\" stroke=\"#bbb\" rx=\"4\"/>\n";
  double yy = ly + 8;
  if (!p.legend_title.empty()) {
    o << "<text x=\"" << lx + 10 << "\" y=\"" << ly + 22 << "\" font-size=\"13\" "
      << "font-weight=\"bold\" fill=\"#222\">" << esc(p.legend_title) << "</text>\n";
    yy += 24;
  }
  for (const auto& s : p.series) {
    const char* col = palette[s.color % (sizeof palette / sizeof *palette)];
    const double cy = yy + 10;
    o << "<line x1=\"" << lx + 10 << "\" x2=\"" << lx + 44 << "\" y1=\"" << cy << "\" y2=\"" << cy
      << "\" stroke=\"" << col << "\" stroke-width=\"2.2\"" << dash_attr(s) << "/>\n";
    o << marker(s.marker, lx + 27, cy, col);
    o << "<text x=\"" << lx + 52 << "\" y=\"" << cy + 4 << "\" font-size=\"12\" fill=\"#222\">"
      << esc(s.name) << "</text>\n";
    yy += 22;
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace sparq_eval
