// The tile sizes of the mma.sync kernels that the host plans its work in (launch.h). A .cu file
// because they are constants of the kernel templates (attention_kernel.cuh).
#include "cuda/attention_kernel.cuh"
#include "cuda/columns_kernel.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {

int attention_block_rows(int dim) {
  switch (dim) {
#define SAMPLEATTN_CUDA_BLOCK_ROWS_CASE(D) \
  case D: return AttentionConfig<D>::kBM;
    SAMPLEATTN_FOR_EACH_HEAD_DIM(SAMPLEATTN_CUDA_BLOCK_ROWS_CASE)
#undef SAMPLEATTN_CUDA_BLOCK_ROWS_CASE
    default: return 0;
  }
}

int column_tile() { return ColumnConfig<128>::kColumns; }

}  // namespace sampleattn::cuda
