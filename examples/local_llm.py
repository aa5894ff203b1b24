"""The spec's first example, as written (with the default model's name): in-process.

    python examples/local_llm.py
"""

from botframework import LocalLLM

llm = LocalLLM("smollm2-135m-instruct")
resp = llm.chat("Rewrite this code using asyncio.")
print(resp.text)
