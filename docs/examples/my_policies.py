"""A batching policy of ten lines: prefill-first (as vLLM v0), shortest prompt admitted first."""

from simulator.scheduling import Scheduler


class ShortFirst(Scheduler):
    name = "short-first"

    @staticmethod
    def queue_key(seq):  # the waiting queue is kept in this order
        return (seq.prompt_len, seq.arrival, seq.seq_id)

    def schedule(self, now):
        prefills = self._admit_waiting(now, self.token_budget)  # whole prompts, within the token budget
        if prefills:
            return self._step(prefills)
        running, _ = self._reserve_decode_slots(now)  # one token each; the newest preempted if KV runs out
        return self._step([(seq, self._decode_tokens(seq)) for seq in running])
