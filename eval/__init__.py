"""Everything that measures: the benchmark behind `avitalk eval` (FID, KID, diversity, LSE-D/C, LVE, FDD, instruction
and emotion metrics), stage 1's and stage 2's own evaluations, end-to-end readback and the real-speech metrics."""
