"""Caffe I/O: binary caffemodels, HDF5 weights, prototxt nets, the authors' .net files."""
