"""Evaluations in containers: Docker jobs, Kubernetes manifests, a pod's steps."""
