"""The .cmps file format: framing, writer, reader, and decoding straight into a caffemodel."""
