"""Images in: the folder walker, decoding, the labels CSV, tf.data pipelines, batch mixing, class balance."""
