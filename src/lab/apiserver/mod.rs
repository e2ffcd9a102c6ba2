//! The lab's Kubernetes API server: the REST protocol over HTTP on 127.0.0.1, one per cluster.
