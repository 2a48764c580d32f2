// cmpstore's Cmp layers: the pruning mask and weight-sharing clusters of one
// weight blob.
//
// The rules are cmpstore's (cmpstore/compression/prune.py,
// cmpstore/compression/kmeans.py, cmpstore/compression/gradients.py), which are
// the DeepCompression-caffe fork's:
//
// * Pruning: the threshold is the magnitude at index int(count * sparse_ratio)
// - 1
//   of the sorted magnitudes (count * ratio in float32, as the fork's C++ has
//   it); weights whose magnitude is strictly greater survive.  Ratio 0 keeps
//   the nonzero weights.
// * Weight sharing: 1-D k-means over the survivors with class_num clusters,
// started
//   linearly between the smallest and largest survivor, Lloyd iterations until
//   no centroid moves by more than 1e-8 + 1e-5 * |centroid| or no assignment
//   changes; a value halfway between two centroids goes to the lower one, and a
//   cluster that empties is dropped.  Arithmetic in double; centroids rounded
//   to Dtype.  When the survivors already take at most class_num distinct
//   values, each is its own cluster, so loading weights that are already shared
//   changes nothing.
// * Gradients: a pruned weight's gradient is zero; every survivor of a cluster
// gets
//   the mean of its cluster's gradients (summed in double, in index order).
//
// Why the forward pass reads each cluster's value back from the weights: all
// members of a cluster start equal and receive the same gradient, so the
// solver's update (weight decay and momentum included) keeps them equal; the
// cluster's value is then whatever its first member now holds, and the
// centroids are trained, as in the paper. The fork instead rewrites the weights
// from centroids that never change.
#ifndef CAFFE_UTIL_CMP_WEIGHT_STRUCTURE_HPP_
#define CAFFE_UTIL_CMP_WEIGHT_STRUCTURE_HPP_

#include <string>

#include "caffe/blob.hpp"
#include "caffe/common.hpp"

namespace caffe {

template <typename Dtype>
class CmpWeightStructure {
 public:
  CmpWeightStructure()
      : sparse_ratio_(0),
        quantize_(false),
        class_num_(0),
        known_(false),
        clusters_(0),
        survivors_(0) {}

  // Check and keep a layer's settings; a bad one stops Caffe with a message
  // naming the layer.
  void Configure(const std::string& layer_name, float sparse_ratio,
                 bool quantize, int class_num);

  // Forget the mask and clusters, so that the next Ensure computes them from
  // the weights then present.
  void Forget() { known_ = false; }

  // Compute the mask and clusters from `weights` unless known, and write the
  // pruned, shared values into it.
  void Ensure(Blob<Dtype>* weights);

  // Force the structure onto `weights`: pruned weights to zero, every cluster
  // to its first member's value.
  void ApplyCpu(Blob<Dtype>* weights);
  void ApplyGpu(Blob<Dtype>* weights);

  // Replace the weight gradient (diff) by the one the structure allows: zero
  // where pruned, cluster means.
  void ShareGradientsCpu(Blob<Dtype>* weights);
  void ShareGradientsGpu(Blob<Dtype>* weights);

  int clusters() const { return clusters_; }
  int survivors() const { return survivors_; }

 private:
  void Compute(Blob<Dtype>* weights);
  void Prune(const Dtype* weights, int count, int* keep);
  // Fills centroids (ascending, in use only) and each survivor's cluster.
  void Cluster(const Dtype* values, int count, std::vector<double>* centroids,
               std::vector<int>* labels);

  std::string layer_name_;
  float sparse_ratio_;
  bool quantize_;
  int class_num_;
  bool known_;
  int clusters_;
  int survivors_;
  Blob<int> keep_;     // 1 where a weight survives pruning, else 0
  Blob<int> labels_;   // each weight's cluster; -1 where pruned or not shared
  Blob<int> members_;  // flat indices of the survivors, grouped by cluster,
                       // ascending within one
  Blob<int> cluster_starts_;    // cluster c's members are members_[starts[c] ..
                                // starts[c + 1])
  Blob<Dtype> cluster_values_;  // scratch, one per cluster: its value (forward)
                                // or mean gradient (backward)
};

}  // namespace caffe

#endif  // CAFFE_UTIL_CMP_WEIGHT_STRUCTURE_HPP_
