// `sampleattn bench`: times dense and sparse attention on generated structured inputs (default),
// random inputs or the user's .npy files, and reports speed and accuracy per sequence length.
#pragma once

namespace sampleattn::cli {

int bench_main(int argc, char** argv, int first);

}  // namespace sampleattn::cli
