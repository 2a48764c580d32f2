// Registers cmpstore's CmpConvolution and CmpInnerProduct under the fork's type
// names, so a net written for the DeepCompression-caffe fork builds unchanged.
#include "caffe/layer_factory.hpp"
#include "caffe/layers/cmp_conv_layer.hpp"
#include "caffe/layers/cmp_inner_product_layer.hpp"

namespace caffe {

INSTANTIATE_CLASS(CmpConvolutionLayer);
INSTANTIATE_CLASS(CmpInnerProductLayer);
REGISTER_LAYER_CLASS(CmpConvolution);
REGISTER_LAYER_CLASS(CmpInnerProduct);

}  // namespace caffe
