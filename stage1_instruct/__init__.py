"""Stage 1: speech -> an editable audio-visual instruction. :mod:`.instructor` runs it (inference), :mod:`.train`
trains it; :mod:`.qformer` and :mod:`.model` are the networks."""
