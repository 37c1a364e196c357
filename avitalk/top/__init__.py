"""The top layer: what composes the stages and what people run.

* :mod:`.pipeline`: :class:`~.pipeline.AVITalkingPipeline`, the one place that puts stage 1 and stage 2 together;
* :mod:`.cli`: the ``avitalk`` command; :mod:`.app`: the Gradio page.

Imports run downward only: this layer may import the stages (``avitalk.stage1_instruct``, ``avitalk.stage2_synthesis``),
the benchmark (``avitalk.eval``) and the ground (the rest of ``avitalk``); none of them imports it (tests/test_layout.py).
"""
