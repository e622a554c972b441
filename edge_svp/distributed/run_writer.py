"""Rank 0's side of a pipelined run's directory: the ranks' reports merged into one record
per block, metrics.jsonl, the merged checkpoint (weights and every rank's training state) and
summary.json, the same files a single-process fit writes."""

from __future__ import annotations

import time
from dataclasses import asdict

from edge_svp.config import RunConfig
from edge_svp.distributed.setup import pipeline_layout
from edge_svp.progress import Reporter
from edge_svp.rundir import MemorySummary, RunDir, RunSummary, checkpoint_contents, memory_kind
from edge_svp.training.probe_plan import host_allocator
from edge_svp.training.step import BatchStats


class RunWriter:
    """Rank 0's side of the run directory: metrics, the merged checkpoint, the summary."""

    def __init__(self, config: RunConfig, own: dict, reporter: Reporter, start: float):
        self.config, self.own, self.reporter = config, own, reporter
        self.run_dir: RunDir = own["run_dir"]
        training = (own.get("checkpoint") or {}).get("training") or {}
        pipeline = training.get("pipeline", {})
        self.records: list[dict] = list(training.get("records", []))
        self.metrics = self.run_dir.open_metrics(self.records)
        self.train_seconds: list[float] = pipeline.get("train_seconds", [])  # per epoch, slowest
        self.tally: dict[str, list] = pipeline.get("tally", {})  # per counter, per rank
        self.resumed_from = f"end of epoch {training['position']['epoch']}" if training else None
        # a resumed run's wall time goes on from its checkpoint's
        self.start = start - (own.get("checkpoint") or {}).get("wall_seconds", 0.0)

    def epoch(self, epoch, reports: list[dict], states: dict, shared: dict) -> None:
        """Merge the ranks' reports into one record per block, write them and the checkpoint."""
        merged = {}
        for r in reports:
            for block, (loss, correct, count), test, lr in zip(
                r["blocks"], r["stats"], r["test_correct"], r["lrs"], strict=True
            ):
                s, t = merged.setdefault(block, (BatchStats(), [0, lr]))
                s.loss, s.correct, s.count = s.loss + loss, s.correct + correct, s.count + count
                t[0] += test
        seconds = time.perf_counter() - reports[0]["epoch_start"]
        records = [
            s.record(block=block + 1, epoch=epoch, test_accuracy=t[0] / shared["num_test"],
                     seconds=seconds, lr=t[1])
            for block, (s, t) in sorted(merged.items())
        ]  # fmt: skip
        self.metrics.write(records)
        self.records.extend(records)
        self.train_seconds.append(max(r["train_seconds"] for r in reports))
        for key in ("sent_bytes", "allreduce_bytes", "wait_seconds", "cpu_seconds"):
            tally = self.tally.setdefault(key, [0] * len(reports))
            self.tally[key] = [t + r[key] for t, r in zip(tally, reports, strict=True)]
        self.run_dir.checkpoints.write({
            "state_dict": states,
            **checkpoint_contents(self.config, self.own["preprocess"], self.own["dataset"]),
            "training": self.training_state(epoch, reports, shared),
            "wall_seconds": time.perf_counter() - self.start,
        })  # fmt: skip
        self.reporter.epoch(records)

    def training_state(self, epoch: int, reports: list[dict], shared: dict) -> dict:
        """What a resumed run goes on with (resume_rank), in a single process's terms where
        they exist (training/state.py): its position, records and bad batches."""
        layout = {k: v for k, v in shared.items() if k != "resumed_epoch"}
        return {
            "position": {"stage": 0, "epoch": epoch, "step": 0},
            "records": list(self.records),
            "bad_batches": sum(r["bad_batches"] for r in reports if r["replica"] == 0),
            "order": reports[0]["order"],
            "ranks": [{k: r[k] for k in ("trainers", "rng", "bad_batches")} for r in reports],
            "pipeline": {
                **pipeline_layout(self.own["layout"]),
                "shared": layout,
                "plans": [asdict(p) for p in self.own["plans"]],
                "train_seconds": list(self.train_seconds),
                "tally": dict(self.tally),
            },
        }

    def summary(self, final, layout, comm, shared, timeout, device) -> dict:
        """summary.json, from every rank's `final` report; returns what it holds."""
        self.metrics.close()
        last = [r for r in self.records if r["epoch"] == self.config.train.epochs]
        plans, micro_batch = self.own["plans"], shared["micro_batch"]
        memory = MemorySummary(
            shared["budget"],
            [f["baseline"] for f in final],
            memory_kind(device.type),
            [max(f["measured_peak"] for f in final if f["stage"] == s)
             for s in range(layout.stages)],
            predicted_peak_bytes=[p.predicted_peak for p in plans],
            micro_batch=[micro_batch] * layout.stages,
            recompute_activations=[False] * layout.stages,
            optimizer_state="fp32",  # a pipeline's levers are off (Pipelined.check)
            step_in_backward=False,
            state_on_host=False,
            normalization_batch=[micro_batch if bn else None for bn in self.own["batchnorm"]],
            per_rank=True,
            host_allocator=host_allocator(self.config.memory, shared["budget"] is not None),
        )  # fmt: skip
        return self.run_dir.write_summary(RunSummary(
            self.own["header"],
            [r["test_accuracy"] for r in last],
            bad_batches=sum(f["bad_batches"] for f in final if f["replica"] == 0),
            resumed_from=self.resumed_from,
            peak_memory_bytes=max(f["peak_memory"] for f in final),
            device=str(device),
            wall_seconds=time.perf_counter() - self.start,
            run_dir=str(self.run_dir),
            final_epoch=self.records[-1],
            memory=memory,
            pipeline=self.pipeline_section(layout, comm, shared, timeout),
        ))  # fmt: skip

    def pipeline_section(self, layout, comm, shared, timeout) -> dict:
        """summary.json's "pipeline": the layout, and the traffic and time of training."""
        epochs, plans = self.config.train.epochs, self.own["plans"]
        steps = epochs * -(-shared["num_train"] // self.config.train.batch_size)
        train_seconds = sum(self.train_seconds)
        return {
            "processes": layout.world,
            "stages": layout.stages,
            "replicas": layout.replicas,
            "communication": comm,
            "stage_blocks": [[p.first + 1, p.stop] for p in plans],
            "micro_batch": shared["micro_batch"],
            "train_seconds": round(train_seconds, 3),
            "train_samples_per_second": round(epochs * shared["num_train"] / train_seconds, 1),
            # training only, summed over ranks; per rank in the lists
            "activation_bytes_per_step": round(sum(self.tally["sent_bytes"]) / steps),
            "allreduce_bytes_per_step": round(sum(self.tally["allreduce_bytes"]) / steps),
            "sent_bytes": self.tally["sent_bytes"],
            "wait_seconds": [round(w, 3) for w in self.tally["wait_seconds"]],
            "cpu_seconds": [round(c, 3) for c in self.tally["cpu_seconds"]],
            "timeout_seconds": timeout,
        }
