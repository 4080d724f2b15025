"""Running a trained model: loading a run or an exported artefact, streamed prediction, test-time augmentation."""
