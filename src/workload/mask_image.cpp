#include "workload/mask_image.h"

#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/mask.h"
#include "workload/atomic_file.h"
#include "workload/attention_profile.h"

namespace sampleattn::workload {
namespace {

// A perceptual dark-to-bright ramp (approximately "inferno"), t in [0, 1].
void colormap(double t, double rgb[3]) {
  static constexpr double kStops[6][3] = {{0, 0, 4},       {40, 11, 84},   {101, 21, 110},
                                          {159, 42, 99},   {237, 105, 37}, {252, 255, 164}};
  t = std::clamp(t, 0.0, 1.0) * 5.0;
  const int i = std::min(4, static_cast<int>(t));
  const double f = t - i;
  for (int c = 0; c < 3; ++c) rgb[c] = kStops[i][c] + f * (kStops[i + 1][c] - kStops[i][c]);
}

}  // namespace

Status render_mask_rgb(const float* q, int64_t q_len, const float* k, int64_t k_len, int head_dim,
                       int64_t window, const std::vector<int32_t>& stripes, const MaskImageOptions& o,
                       RgbImage* image) {
  if (image == nullptr || q == nullptr || k == nullptr) return null_pointer("render_mask: null argument");
  if (q_len < 1 || k_len < 1 || q_len > k_len) return invalid_shape("render_mask: need 1 <= q_len <= k_len");
  if (head_dim < 1) return invalid_shape("render_mask: bad head_dim");
  if (o.max_pixels < 1 || !(o.decades > 0) || !(o.overlay_alpha >= 0 && o.overlay_alpha <= 1) || window < 0) {
    return invalid_argument("render_mask: bad options");
  }
  for (size_t s = 0; s < stripes.size(); ++s) {
    if (stripes[s] < 0 || stripes[s] >= k_len || (s > 0 && stripes[s] <= stripes[s - 1])) {
      return invalid_argument("render_mask: stripes must be ascending key positions");
    }
  }
  const int64_t cols_per_px = (k_len + o.max_pixels - 1) / o.max_pixels;
  const int64_t rows_per_px = (q_len + o.max_pixels - 1) / o.max_pixels;
  const int width = static_cast<int>((k_len + cols_per_px - 1) / cols_per_px);
  const int height = static_cast<int>((q_len + rows_per_px - 1) / rows_per_px);
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
  const int64_t offset = k_len - q_len;

  // Cell values: max (or mean) probability of the exact row in the middle of each pixel row.
  std::vector<double> cell(static_cast<size_t>(width) * height, 0.0);
  std::vector<int64_t> row_pos(height);
#pragma omp parallel for schedule(dynamic, 1)
  for (int y = 0; y < height; ++y) {
    const int64_t first = y * rows_per_px;
    const int64_t last = std::min(q_len, first + rows_per_px) - 1;
    const int64_t i = (first + last) / 2;
    const int64_t p = offset + i;
    row_pos[y] = p;
    std::vector<double> P;
    row_probabilities(q + i * head_dim, k, head_dim, head_dim, causal_end(p), scale, &P);
    for (int64_t j = 0; j <= p; ++j) {
      double& c = cell[static_cast<size_t>(y) * width + j / cols_per_px];
      c = o.cell_max ? std::max(c, P[j]) : c + P[j] / static_cast<double>(cols_per_px);
    }
  }
  double top = 0;
  for (double v : cell) top = std::max(top, v);
  const double log_top = std::log10(std::max(top, 1e-300));

  image->width = width;
  image->height = height;
  image->pixels.assign(static_cast<size_t>(width) * height * 3, 0);
  for (int y = 0; y < height; ++y) {
    const int64_t p = row_pos[y];
    const int64_t win_lo = window_lo(p, window);
    size_t s = 0;
    for (int x = 0; x < width; ++x) {
      const int64_t c0 = x * cols_per_px;
      const int64_t c1 = std::min(k_len, c0 + cols_per_px) - 1;
      uint8_t* px = image->pixels.data() + (static_cast<size_t>(y) * width + x) * 3;
      if (c0 > p) {  // entirely above the causal diagonal
        px[0] = px[1] = px[2] = 40;
        continue;
      }
      double rgb[3];
      const double v = cell[static_cast<size_t>(y) * width + x];
      const double t = v > 0 ? (std::log10(v) - (log_top - o.decades)) / o.decades : 0.0;
      colormap(t, rgb);
      if (o.draw_mask) {
        const bool in_window = window > 0 && c1 >= win_lo && c0 <= p;
        while (s < stripes.size() && stripes[s] < c0) ++s;
        const bool in_stripe = s < stripes.size() && stripes[s] <= c1 && stripe_visible(stripes[s], p, window, kNoModelWindow);
        const double* tint = nullptr;
        static constexpr double kCyan[3] = {0, 230, 255};
        static constexpr double kMagenta[3] = {255, 40, 220};
        if (in_window) tint = kCyan;
        else if (in_stripe) tint = kMagenta;
        if (tint != nullptr)
          for (int ch = 0; ch < 3; ++ch) rgb[ch] = (1 - o.overlay_alpha) * rgb[ch] + o.overlay_alpha * tint[ch];
      }
      for (int ch = 0; ch < 3; ++ch) px[ch] = static_cast<uint8_t>(std::clamp(std::lround(rgb[ch]), 0L, 255L));
    }
  }
  return Status::ok();
}

Status write_png(const std::string& path, const RgbImage& img) {
  if (img.width < 1 || img.height < 1 ||
      img.pixels.size() != static_cast<size_t>(img.width) * img.height * 3) {
    return invalid_argument("write_png: image size does not match its pixels");
  }
  // libpng's simplified API: no setjmp/longjmp across C++ frames.
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(img.width);
  image.height = static_cast<png_uint_32>(img.height);
  image.format = PNG_FORMAT_RGB;
  // Through a temporary file: a failed write leaves any previous picture at `path` intact.
  AtomicFile out;
  SAMPLEATTN_RETURN_IF_ERROR(out.create(path));
  errno = 0;
  const int ok = png_image_write_to_stdio(&image, out.file(), 0, img.pixels.data(), img.width * 3, nullptr);
  if (!ok) {
    const int err = errno;
    const std::string msg = image.message[0] ? image.message : "unknown libpng error";
    png_image_free(&image);
    out.discard();
    const std::string why = err != 0 ? std::string(" (") + std::strerror(err) + ")" : "";
    return invalid_argument("cannot write PNG '" + path + "': " + msg + why);
  }
  return out.commit();
}

Status render_mask_png(const std::string& path, const float* q, int64_t q_len, const float* k, int64_t k_len,
                       int head_dim, int64_t window, const std::vector<int32_t>& stripes,
                       const MaskImageOptions& options) {
  RgbImage img;
  SAMPLEATTN_RETURN_IF_ERROR(render_mask_rgb(q, q_len, k, k_len, head_dim, window, stripes, options, &img));
  return write_png(path, img);
}

}  // namespace sampleattn::workload
