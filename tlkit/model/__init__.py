"""The Keras model: raw pixels -> augmentation -> preprocessing -> frozen base -> head; fine-tuning."""
