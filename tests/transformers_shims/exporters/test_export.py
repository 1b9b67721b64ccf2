"""`ExportTesterMixin`, the base of `ModelTesterMixin` in the Transformers sdist's tests/test_modeling_common.py, whose
file (the Transformers repository's tests/exporters/test_export.py) the sdist does not ship. This one checks what
deploying a model needs: every model class exports with `torch.export` through Transformers' `DynamoExporter`, and
the exported program gives the eager outputs."""

import copy

import torch
from torch.utils._pytree import tree_leaves
from transformers.exporters import DynamoConfig, DynamoExporter
from transformers.testing_utils import torch_device


class ExportTesterMixin:
    test_torch_exportable = True
    # The exported graph runs the same kernels in the same order; only fusions may move the last bits.
    export_atol = 1e-5

    def test_torch_export_matches_eager(self):
        if not self.test_torch_exportable:
            self.skipTest(reason="the tester marks its models as not exportable (test_torch_exportable = False)")
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                model = model_class(copy.deepcopy(config)).to(torch_device).eval()
                # An export is for inference: Transformers' exporters refuse labels (no loss in the graph).
                inputs = {k: v for k, v in self._prepare_for_class(inputs_dict, model_class).items() if k != "labels"}
                with torch.no_grad():
                    expected = model(**inputs)
                exported = DynamoExporter().export(model, inputs, DynamoConfig())
                outputs = exported(**inputs)
                expected_leaves = [t for t in tree_leaves(expected.to_tuple()) if isinstance(t, torch.Tensor)]
                output_leaves = [t for t in tree_leaves(outputs.to_tuple()) if isinstance(t, torch.Tensor)]
                self.assertEqual(len(output_leaves), len(expected_leaves))
                for output, reference in zip(output_leaves, expected_leaves, strict=True):
                    torch.testing.assert_close(output, reference, rtol=0, atol=self.export_atol)
