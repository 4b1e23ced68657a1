# The CUDA check of the training loop as run on a lent GPU machine (wheels of pydantic, transformers,
# peft and their needs carried in .whl/; see bench/cuda_training.py).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
python3 -m bench.cuda_training --shape tinyllama-1.1b --methods lora,full --seq-len 1024 --batch-size 8 --steps 30 --json $OUT/tinyllama.json 2>&1 | grep -v Warning
timeout 200 python3 -m bench.cuda_training --shape llama-3.2-3b --methods lora,full --seq-len 2048 --batch-size 4 --steps 20 --json $OUT/llama3b.json 2>&1 | grep -v Warning
