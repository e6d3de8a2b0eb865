"""Many runs and what they show: sweeps (load-latency curves, highest sustainable rate), plans
(the cheapest deployment meeting SLOs), paired policy comparisons, autoscaled-vs-fixed fleets,
the trials they send to worker processes or Ray, and their reports and plots. Imports
simulator.scenario and every layer below it."""
