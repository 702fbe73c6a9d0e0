# The models image the init container copies from: only models_export/ (a few tens of MB).
#   docker build -f deploy/kubernetes/models.Dockerfile -t registry.example.com/emotion-ai-models:TAG .
#   docker push registry.example.com/emotion-ai-models:TAG
FROM busybox:1.37
COPY models_export /models-src
