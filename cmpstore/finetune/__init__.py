"""Finetuning for Deep Compression: the layer-wise prune-then-quantize schedule, run with pycaffe.

:mod:`~cmpstore.finetune.schedule` describes the stages,
:mod:`~cmpstore.finetune.data` provides the digits (or any .npz),
:mod:`~cmpstore.finetune.stagefiles` writes each stage's net and solver,
:mod:`~cmpstore.finetune.constraints` keeps pruned weights at zero and clusters
shared on a stock Caffe, and :mod:`~cmpstore.finetune.driver` runs it all.
Only the driver imports ``caffe``, and only when a stage runs.
"""
