"""TFDS conformance test of tfds_builder/tsukazaki_optos: builds its dummy_data/ (the manual dir)
and reads it back with tf.data.

Needs TensorFlow (the `dev` extra); the TF-free paths are covered in tests/data/.
"""

import tensorflow_datasets as tfds

from tfds_builder.tsukazaki_optos import tsukazaki_optos_dataset_builder


class TsukazakiOptosTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tsukazaki_optos_dataset_builder.Builder
    # dummy_data/data.csv has 6 rows; the last row's image is deliberately absent.
    SPLITS = {"train": 5}
    # Every config runs the same code; one small and the default size keep the test fast.
    BUILDER_CONFIG_NAMES_TO_TEST = ["32px", "256px"]

    def _make_builder(self, config=None):
        # The base class reads back with tf.data (`as_dataset`), which ArrayRecord, the
        # builder's default format, does not support; the format does not change the examples.
        return self.dataset_class(
            data_dir=self.tmp_dir, config=config, version=self.VERSION, file_format="tfrecord"
        )


if __name__ == "__main__":
    tfds.testing.test_main()
