//! Simulated controllers: what the kubelet, the DaemonSet/Deployment controllers, Flux and Cilium's
//! Cluster Mesh would do, acting on the lab's API servers over HTTP as real controllers do.
