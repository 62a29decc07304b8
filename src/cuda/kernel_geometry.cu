// The tile sizes of the mma.sync kernels that the host plans its work in (launch.h). A .cu file
// because they are constants of the kernel templates (attention_kernel.cuh).
#include "cuda/attention_kernel.cuh"
#include "cuda/columns_kernel.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {

int attention_block_rows(int head_dim) {
  return head_dim <= 128 ? AttentionConfig<128>::kBM : AttentionConfig<256>::kBM;
}

int column_tile() { return ColumnConfig<128>::kColumns; }

}  // namespace sampleattn::cuda
