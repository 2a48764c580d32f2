// cmpstore's CmpInnerProduct, with the interface of the DeepCompression-caffe
// fork's layer: InnerProductParameter sparse_ratio = 7, class_num = 8,
// quantize_term = 9.
#ifndef CAFFE_CMP_INNER_PRODUCT_LAYER_HPP_
#define CAFFE_CMP_INNER_PRODUCT_LAYER_HPP_

#include "caffe/layers/cmp_layer.hpp"
#include "caffe/layers/inner_product_layer.hpp"

namespace caffe {

template <typename Dtype>
class CmpInnerProductLayer : public CmpLayer<Dtype, InnerProductLayer<Dtype> > {
 public:
  explicit CmpInnerProductLayer(const LayerParameter& param)
      : CmpLayer<Dtype, InnerProductLayer<Dtype> >(
            param, param.inner_product_param().sparse_ratio(),
            param.inner_product_param().quantize_term(),
            param.inner_product_param().class_num()) {}
  virtual inline const char* type() const { return "CmpInnerProduct"; }
};

}  // namespace caffe

#endif  // CAFFE_CMP_INNER_PRODUCT_LAYER_HPP_
