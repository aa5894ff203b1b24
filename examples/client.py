"""The same example over HTTP: one line differs (Client for LocalLLM). Needs a server:
`botframework serve` (or BOTFRAMEWORK_URL pointing at one); auto_start=True starts one here.

    python examples/client.py
"""

from botframework.client import Client

llm = Client("smollm2-135m-instruct", auto_start=True)
resp = llm.chat("Rewrite this code using asyncio.")
print(resp.text)
llm.close()
