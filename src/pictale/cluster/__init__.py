"""pictale on Ray Serve: the same FastAPI app as the ingress, the generation engine as a deployment of replicas.

An entry point beside `api/` (DESIGN.md): nothing here re-implements the queue. The ingress's `GenerationService`
keeps its bounded queue, jobs and event logs; its worker threads hand each job to a replica through a Serve
handle (`remote_engine.RemoteEngine`), routed by model and avatar set (Serve model multiplexing). Ray is imported
only by the modules that run under it, never at `pictale --help` time.
"""
