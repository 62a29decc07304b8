// A picture of one head: its true attention heat map, downsampled, with a sparse mask (window
// band and stripe columns) drawn over it, written as PNG with libpng.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace sampleattn::workload {

struct MaskImageOptions {
  int max_pixels = 1024;      // the picture is at most this many pixels on each side
  double scale = 0;           // softmax scale; 0: 1/sqrt(head_dim)
  bool cell_max = true;       // each cell shows the max probability in it (false: the mean)
  double decades = 6;         // log10 range shown: [max - decades, max]
  double overlay_alpha = 0.4; // opacity of the mask colour
  bool draw_mask = true;
};

// q: q_len rows of head_dim floats, k: k_len rows (the queries are the last q_len of the k_len
// positions, causal). Each picture row is one exact query row (the middle of the rows it
// covers); each pixel column covers ceil(k_len / width) keys. The mask: the query at p keeps
// keys max(0, p-window+1)..p (drawn cyan) and the stripes j <= p-window (drawn magenta). Keys
// above the causal diagonal are dark grey.
Status render_mask_png(const std::string& path, const float* q, int64_t q_len, const float* k, int64_t k_len,
                       int head_dim, int64_t window, const std::vector<int32_t>& stripes,
                       const MaskImageOptions& options = {});

// RGB pixels, row-major, 3 bytes each, for tests and for callers that encode themselves.
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
};
Status render_mask_rgb(const float* q, int64_t q_len, const float* k, int64_t k_len, int head_dim,
                       int64_t window, const std::vector<int32_t>& stripes, const MaskImageOptions& options,
                       RgbImage* image);

Status write_png(const std::string& path, const RgbImage& image);

}  // namespace sampleattn::workload
