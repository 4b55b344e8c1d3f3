#!/usr/bin/env bash
# Prepare what benchs/tools/gpu_session.sh needs on a GPU machine that has torch but no registry (README "On a GPU"):
# the packages its image lacks, as Python 3.12 wheels in .whl/ (kbqa's pinned versions; CTranslate2's 43 MB wheel
# is left out to stay under the 64 MiB a run may carry), and the models' configs and tokenizers in .gpu-assets/.
# Both folders are listed in .git/info/exclude and named in the run's `carry`.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.gpu-assets/' .git/info/exclude || echo /.gpu-assets/ >> .git/info/exclude
platforms=""
for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms="$platforms --platform ${p}_x86_64"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
  --platform any -d .whl \
  annotated-types==0.8.0 bm25s==0.3.16 distro==1.9.0 faiss-cpu==1.15.1 fastapi==0.165.0 gguf==0.19.0 \
  httpcore2==2.16.2 httpx2==2.16.2 huggingface_hub==2.4.0 jsonpatch==1.48 jsonpointer==3.12 langchain-core==1.8.3 \
  langchain-text-splitters==1.1.3 langsmith==0.15.1 opentelemetry-api==1.45.2 orjson==3.13.0 peft==0.21.2 \
  pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 pypdf==7.1.0 PyStemmer==3.1.0 \
  python-dotenv==1.2.4 python-frontmatter==1.3.0 python-multipart==0.0.34 requests-toolbelt==1.0.0 \
  selectolax==1.0.2 sentence-transformers==6.2.0 sniffio==1.3.1 sse-starlette==3.7.0 starlette==1.10.0 \
  tenacity==9.2.1 tokenizers==0.23.3 transformers==5.23.0 truststore==0.10.5 typing-inspection==0.4.5 \
  uuid_utils==0.19.0 uvicorn==0.54.0 websockets==17.4 xxhash==4.1.0 zstandard==0.25.0
.venv/bin/python -m benchs.speed.gpu_check --make-assets .gpu-assets
du -sh .whl .gpu-assets
echo "Before the run, move the tracked weights over the carry limit aside (and back after):"
echo "  retrieval/answering/shipped-sentence-scorer/model.safetensors, retrieval/answering/shipped-adapter/adapter_model.safetensors, distill/data/*.jsonl"
