// cmpstore's Cmp layers: enforcing a weight blob's pruning mask and clusters on
// the GPU. The mask and clusters themselves are computed once on the CPU
// (cmp_weight_structure.cpp); these kernels run every iteration.
#include <algorithm>

#include "caffe/util/cmp_weight_structure.hpp"

namespace caffe {

namespace {

// Blocks in a grid-stride loop over clusters: enough to fill any GPU, within
// every launch limit.
const int kMaxClusterBlocks = 65535;

template <typename Dtype>
__global__ void ReadClusterValues(const int clusters, const int* members,
                                  const int* starts, const Dtype* weights,
                                  Dtype* values) {
  CUDA_KERNEL_LOOP(c, clusters) { values[c] = weights[members[starts[c]]]; }
}

// Zero where pruned; a shared survivor takes its cluster's value; any other
// survivor stays.
template <typename Dtype>
__global__ void Restructure(const int count, const int* keep, const int* labels,
                            const Dtype* values, Dtype* target) {
  CUDA_KERNEL_LOOP(i, count) {
    if (!keep[i]) {
      target[i] = 0;
    } else if (labels[i] >= 0) {
      target[i] = values[labels[i]];
    }
  }
}

// One block per cluster sums its members' gradients in double, in a fixed order
// (strided partial sums, then a tree), so the result is the same on every run:
// no atomics.
template <typename Dtype>
__global__ void ClusterMeanGradients(const int clusters, const int* members,
                                     const int* starts, const Dtype* diff,
                                     Dtype* means) {
  __shared__ double partial[CAFFE_CUDA_NUM_THREADS];
  for (int c = blockIdx.x; c < clusters; c += gridDim.x) {
    double sum = 0;
    for (int j = starts[c] + threadIdx.x; j < starts[c + 1]; j += blockDim.x) {
      sum += diff[members[j]];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) {
        partial[threadIdx.x] += partial[threadIdx.x + stride];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      means[c] = static_cast<Dtype>(partial[0] / (starts[c + 1] - starts[c]));
    }
    __syncthreads();
  }
}

}  // namespace

template <typename Dtype>
void CmpWeightStructure<Dtype>::ApplyGpu(Blob<Dtype>* weights) {
  const int count = weights->count();
  Dtype* data = weights->mutable_gpu_data();
  const Dtype* values = NULL;
  if (clusters_ > 0) {
    ReadClusterValues<Dtype>
        <<<CAFFE_GET_BLOCKS(clusters_), CAFFE_CUDA_NUM_THREADS>>>(
            clusters_, members_.gpu_data(), cluster_starts_.gpu_data(), data,
            cluster_values_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    values = cluster_values_.gpu_data();
  }
  Restructure<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, keep_.gpu_data(), labels_.gpu_data(), values, data);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::ShareGradientsGpu(Blob<Dtype>* weights) {
  const int count = weights->count();
  Dtype* diff = weights->mutable_gpu_diff();
  const Dtype* means = NULL;
  if (clusters_ > 0) {
    // blockDim must be a power of two for the tree in ClusterMeanGradients; 512
    // is.
    ClusterMeanGradients<Dtype>
        <<<std::min(clusters_, kMaxClusterBlocks), CAFFE_CUDA_NUM_THREADS>>>(
            clusters_, members_.gpu_data(), cluster_starts_.gpu_data(), diff,
            cluster_values_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    means = cluster_values_.gpu_data();
  }
  Restructure<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, keep_.gpu_data(), labels_.gpu_data(), means, diff);
  CUDA_POST_KERNEL_CHECK;
}

template void CmpWeightStructure<float>::ApplyGpu(Blob<float>* weights);
template void CmpWeightStructure<double>::ApplyGpu(Blob<double>* weights);
template void CmpWeightStructure<float>::ShareGradientsGpu(
    Blob<float>* weights);
template void CmpWeightStructure<double>::ShareGradientsGpu(
    Blob<double>* weights);

}  // namespace caffe
