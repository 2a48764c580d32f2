// cmpstore's Cmp layers: computing and enforcing a weight blob's pruning mask
// and clusters on the CPU. The rules, and why they are what they are, are in
// include/caffe/util/cmp_weight_structure.hpp.
#include "caffe/util/cmp_weight_structure.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace caffe {

namespace {

// cmpstore.compression.kmeans.lloyd's limits: numpy allclose's defaults, and an
// iteration cap no layer reaches.
const double kRelativeTolerance = 1e-5;
const double kAbsoluteTolerance = 1e-8;
const int kMaxIterations = 10000;
// The largest class_num cmpstore stores (codebook indices are 16-bit).
const int kMaxClasses = 65536;

// The largest T not above `midpoint`: a value v belongs below the midpoint iff
// v <= it.  For float this is what makes a comparison in float agree with the
// comparison in double that defines it.
template <typename T>
T HighestNotAbove(double midpoint);

template <>
float HighestNotAbove<float>(double midpoint) {
  float rounded = static_cast<float>(midpoint);
  if (static_cast<double>(rounded) > midpoint) {
    rounded = std::nextafter(rounded, -std::numeric_limits<float>::infinity());
  }
  return rounded;
}

template <>
double HighestNotAbove<double>(double midpoint) {
  return midpoint;
}

// Cluster c of the sorted values is sorted[borders[c] .. borders[c + 1]); ties
// at a midpoint go down.
template <typename T>
std::vector<int> Borders(const std::vector<T>& sorted,
                         const std::vector<double>& centroids) {
  const int clusters = centroids.size();
  std::vector<int> borders(clusters + 1, 0);
  borders[clusters] = sorted.size();
  for (int c = 0; c + 1 < clusters; ++c) {
    const T limit = HighestNotAbove<T>((centroids[c] + centroids[c + 1]) / 2);
    borders[c + 1] =
        std::upper_bound(sorted.begin(), sorted.end(), limit) - sorted.begin();
  }
  return borders;
}

}  // namespace

template <typename Dtype>
void CmpWeightStructure<Dtype>::Configure(const std::string& layer_name,
                                          float sparse_ratio, bool quantize,
                                          int class_num) {
  CHECK(sparse_ratio >= 0 && sparse_ratio < 1)
      << "layer '" << layer_name << "': sparse_ratio must be in [0, 1), got "
      << sparse_ratio;
  if (quantize) {
    CHECK(class_num >= 1 && class_num <= kMaxClasses)
        << "layer '" << layer_name << "': class_num must be in 1.."
        << kMaxClasses << ", got " << class_num;
  }
  layer_name_ = layer_name;
  sparse_ratio_ = sparse_ratio;
  quantize_ = quantize;
  class_num_ = class_num;
  known_ = false;
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::Ensure(Blob<Dtype>* weights) {
  if (!known_) {
    Compute(weights);
  }
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::Prune(const Dtype* weights, int count,
                                      int* keep) {
  // float * float, then truncation: the fork's int(count * ratio), and
  // cmpstore.prune.pruned_count.
  const int cut = static_cast<int>(static_cast<float>(count) * sparse_ratio_);
  Dtype threshold = 0;
  if (cut > 0) {
    std::vector<Dtype> magnitudes(count);
    for (int i = 0; i < count; ++i) {
      magnitudes[i] = std::fabs(weights[i]);
    }
    std::nth_element(magnitudes.begin(), magnitudes.begin() + (cut - 1),
                     magnitudes.end());
    threshold = magnitudes[cut - 1];
  }
  for (int i = 0; i < count; ++i) {
    keep[i] = std::fabs(weights[i]) > threshold ? 1 : 0;
  }
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::Cluster(const Dtype* values, int count,
                                        std::vector<double>* centroids,
                                        std::vector<int>* labels) {
  std::vector<Dtype> sorted(values, values + count);
  std::sort(sorted.begin(), sorted.end());
  std::vector<Dtype> distinct(sorted);
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (static_cast<int>(distinct.size()) <= class_num_) {
    // Already shared (or too few values to share): each distinct value is its
    // own cluster.
    centroids->assign(distinct.begin(), distinct.end());
    labels->resize(count);
    for (int i = 0; i < count; ++i) {
      (*labels)[i] =
          std::lower_bound(distinct.begin(), distinct.end(), values[i]) -
          distinct.begin();
    }
    return;
  }
  // Prefix sums in double, added in order, as numpy's cumsum does in
  // cmpstore.compression.kmeans.
  std::vector<double> prefix(count + 1, 0.0);
  for (int i = 0; i < count; ++i) {
    prefix[i + 1] = prefix[i] + static_cast<double>(sorted[i]);
  }
  // Linear initialisation between the smallest and largest value (the fork's
  // and the paper's).
  const double low = sorted.front();
  const double high = sorted.back();
  std::vector<double> current(class_num_);
  for (int c = 0; c < class_num_; ++c) {
    current[c] =
        class_num_ == 1
            ? low
            : std::min(low + (high - low) * c / (class_num_ - 1), high);
  }
  std::vector<int> borders = Borders(sorted, current);
  for (int iteration = 0; iteration < kMaxIterations; ++iteration) {
    std::vector<double> means;
    std::vector<int> kept_borders(1, borders[0]);
    bool moved = false;
    for (size_t c = 0; c + 1 < borders.size(); ++c) {
      const int size = borders[c + 1] - borders[c];
      if (size == 0) {
        continue;  // an emptied cluster drops out for good, as the fork's
                   // division by zero makes it
      }
      const double mean = (prefix[borders[c + 1]] - prefix[borders[c]]) / size;
      moved = moved || std::fabs(mean - current[c]) >
                           kAbsoluteTolerance +
                               kRelativeTolerance * std::fabs(current[c]);
      means.push_back(mean);
      kept_borders.push_back(borders[c + 1]);
    }
    current.swap(means);
    borders.swap(kept_borders);
    if (!moved) {
      break;
    }
    std::vector<int> next = Borders(sorted, current);
    if (next == borders) {
      break;
    }
    borders.swap(next);
  }
  // The centroids are the means of the final assignment; a value's cluster is
  // the number of clusters whose largest value is below it (equal values never
  // straddle a border).
  centroids->clear();
  std::vector<Dtype> largest;
  for (size_t c = 0; c + 1 < borders.size(); ++c) {
    const int size = borders[c + 1] - borders[c];
    if (size > 0) {
      centroids->push_back((prefix[borders[c + 1]] - prefix[borders[c]]) /
                           size);
      largest.push_back(sorted[borders[c + 1] - 1]);
    }
  }
  largest.pop_back();
  labels->resize(count);
  for (int i = 0; i < count; ++i) {
    (*labels)[i] = std::lower_bound(largest.begin(), largest.end(), values[i]) -
                   largest.begin();
  }
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::Compute(Blob<Dtype>* weights) {
  const int count = weights->count();
  Dtype* data = weights->mutable_cpu_data();
  for (int i = 0; i < count; ++i) {
    CHECK(std::isfinite(data[i]))
        << "layer '" << layer_name_ << "': weight " << i << " is " << data[i]
        << "; pruning and weight sharing need finite weights";
  }
  const std::vector<int> shape(1, std::max(count, 1));
  keep_.Reshape(shape);
  labels_.Reshape(shape);
  int* keep = keep_.mutable_cpu_data();
  int* labels = labels_.mutable_cpu_data();
  Prune(data, count, keep);
  std::vector<int> survivor_index;
  std::vector<Dtype> survivor_values;
  for (int i = 0; i < count; ++i) {
    labels[i] = -1;
    if (keep[i]) {
      survivor_index.push_back(i);
      survivor_values.push_back(data[i]);
    } else {
      data[i] = 0;
    }
  }
  survivors_ = survivor_index.size();
  clusters_ = 0;
  if (quantize_ && survivors_ > 0) {
    std::vector<double> centroids;
    std::vector<int> survivor_labels;
    Cluster(survivor_values.data(), survivors_, &centroids, &survivor_labels);
    clusters_ = centroids.size();
    members_.Reshape(std::vector<int>(1, survivors_));
    cluster_starts_.Reshape(std::vector<int>(1, clusters_ + 1));
    cluster_values_.Reshape(std::vector<int>(1, clusters_));
    int* starts = cluster_starts_.mutable_cpu_data();
    std::fill(starts, starts + clusters_ + 1, 0);
    for (int j = 0; j < survivors_; ++j) {
      ++starts[survivor_labels[j] + 1];
    }
    for (int c = 0; c < clusters_; ++c) {
      starts[c + 1] += starts[c];
    }
    // A counting sort by cluster keeps each cluster's members in index order,
    // which is the order cmpstore.compression.gradients sums their gradients
    // in.
    std::vector<int> next_slot(starts, starts + clusters_);
    int* members = members_.mutable_cpu_data();
    for (int j = 0; j < survivors_; ++j) {
      const int index = survivor_index[j];
      const int label = survivor_labels[j];
      members[next_slot[label]++] = index;
      labels[index] = label;
      data[index] = static_cast<Dtype>(centroids[label]);
    }
  }
  known_ = true;
  LOG(INFO) << "layer '" << layer_name_ << "': kept " << survivors_ << " of "
            << count << " weights" << (quantize_ ? ", shared among " : "")
            << (quantize_ ? std::to_string(clusters_) + " values" : "");
}

namespace {

// The one CPU pass that gives a blob the layer's structure, for weights and
// gradients alike (the .cu file has it as one kernel): a pruned element
// becomes zero, a shared one its cluster's value; with no clusters
// (per_cluster NULL, every label -1) survivors keep their own.
template <typename Dtype>
void Restructure(const int count, const int* keep, const int* labels,
                 const Dtype* per_cluster, Dtype* out) {
  for (int i = 0; i < count; ++i) {
    if (!keep[i]) {
      out[i] = 0;
    } else if (labels[i] >= 0) {
      out[i] = per_cluster[labels[i]];
    }
  }
}

}  // namespace

template <typename Dtype>
void CmpWeightStructure<Dtype>::ApplyCpu(Blob<Dtype>* weights) {
  const int count = weights->count();
  const int* keep = keep_.cpu_data();
  const int* labels = labels_.cpu_data();
  Dtype* data = weights->mutable_cpu_data();
  Dtype* values = NULL;
  if (clusters_ > 0) {
    const int* members = members_.cpu_data();
    const int* starts = cluster_starts_.cpu_data();
    values = cluster_values_.mutable_cpu_data();
    for (int c = 0; c < clusters_; ++c) {
      values[c] = data[members[starts[c]]];
    }
  }
  Restructure(count, keep, labels, values, data);
}

template <typename Dtype>
void CmpWeightStructure<Dtype>::ShareGradientsCpu(Blob<Dtype>* weights) {
  const int count = weights->count();
  const int* keep = keep_.cpu_data();
  const int* labels = labels_.cpu_data();
  Dtype* diff = weights->mutable_cpu_diff();
  Dtype* means = NULL;
  if (clusters_ > 0) {
    const int* members = members_.cpu_data();
    const int* starts = cluster_starts_.cpu_data();
    means = cluster_values_.mutable_cpu_data();
    for (int c = 0; c < clusters_; ++c) {
      double sum = 0;
      for (int j = starts[c]; j < starts[c + 1]; ++j) {
        sum += diff[members[j]];
      }
      means[c] = static_cast<Dtype>(sum / (starts[c + 1] - starts[c]));
    }
  }
  Restructure(count, keep, labels, means, diff);
}

INSTANTIATE_CLASS(CmpWeightStructure);

}  // namespace caffe
