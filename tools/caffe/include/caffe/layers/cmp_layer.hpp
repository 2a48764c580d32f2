// cmpstore's Cmp layers: a stock Convolution or InnerProduct whose weight blob
// is pruned and, with quantize_term, shared among class_num values (see
// caffe/util/cmp_weight_structure.hpp).
//
// The forward pass runs on the pruned and shared weights; the backward pass
// leaves the stock layer's bias and input gradients alone and replaces its
// weight gradient by the one the structure allows.  The weights blob itself
// holds the pruned and shared values, so what Caffe saves is the compressed
// model, ready for `cmpstore encode`.
#ifndef CAFFE_CMP_LAYER_HPP_
#define CAFFE_CMP_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"
#include "caffe/util/cmp_weight_structure.hpp"

namespace caffe {

template <typename Dtype, typename StockLayer>
class CmpLayer : public StockLayer {
 public:
  CmpLayer(const LayerParameter& param, float sparse_ratio, bool quantize_term,
           int class_num)
      : StockLayer(param),
        sparse_ratio_(sparse_ratio),
        quantize_term_(quantize_term),
        class_num_(class_num) {}

  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
                          const vector<Blob<Dtype>*>& top) {
    StockLayer::LayerSetUp(bottom, top);
    structure_.Configure(this->layer_param_.name(), sparse_ratio_,
                         quantize_term_, class_num_);
  }

  // Net calls this after copying trained weights in: the mask and clusters come
  // from those weights, and are written into them at once, so that a net saved
  // before any forward pass already holds the pruned and shared values.
  virtual void OnWeightsCopied() {
    structure_.Forget();
    structure_.Ensure(this->blobs_[0].get());
  }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top) {
    structure_.Ensure(this->blobs_[0].get());
    structure_.ApplyCpu(this->blobs_[0].get());
    StockLayer::Forward_cpu(bottom, top);
  }

  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom) {
    StockLayer::Backward_cpu(top, propagate_down, bottom);
    if (this->param_propagate_down_[0]) {
      structure_.ShareGradientsCpu(this->blobs_[0].get());
    }
  }

  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
                           const vector<Blob<Dtype>*>& top) {
#ifdef CPU_ONLY
    NO_GPU;
#else
    structure_.Ensure(this->blobs_[0].get());
    structure_.ApplyGpu(this->blobs_[0].get());
    StockLayer::Forward_gpu(bottom, top);
#endif
  }

  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
                            const vector<bool>& propagate_down,
                            const vector<Blob<Dtype>*>& bottom) {
#ifdef CPU_ONLY
    NO_GPU;
#else
    StockLayer::Backward_gpu(top, propagate_down, bottom);
    if (this->param_propagate_down_[0]) {
      structure_.ShareGradientsGpu(this->blobs_[0].get());
    }
#endif
  }

 private:
  const float sparse_ratio_;
  const bool quantize_term_;
  const int class_num_;
  CmpWeightStructure<Dtype> structure_;
};

}  // namespace caffe

#endif  // CAFFE_CMP_LAYER_HPP_
