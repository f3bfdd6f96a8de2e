#!/usr/bin/env python3
"""Renders chat-template fixtures with transformers' own Jinja environment.

For each template (SmolLM2 from the GGUF; Llama-2, Llama-3, Llama-3.1, Qwen2, Qwen2.5 and Qwen3
written below from their published tokenizer_config.json) renders a set of conversations and writes
tests/fixtures/chat_templates/<name>.json = {"template", "bos_token", "eos_token", "extra",
"cases": [{"messages", "add_generation_prompt", "expected"} | {"messages", "error"}]}.

Run: /opt/nfpy/bin/python scripts/make_chat_fixtures.py
"""
import json
import os
import sys

import jinja2
from transformers.utils.chat_template_utils import _compile_jinja_template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "chat_templates")
GGUF = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2.5-Instruct (ChatML with tool calls): exercises tools, tojson and loop look-behind.
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


# Qwen3 (Qwen/Qwen3-8B tokenizer_config.json, the revision that checks `content is string`):
# thinking blocks, enable_thinking, tool calls.
QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


def smollm2_template():
    import gguf

    reader = gguf.GGUFReader(GGUF)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


TRICKY = 'Line one\nline two\n\n  indented {{ not a tag }} {% nor this %} "quoted" \'single\' \u00e9\u4e2d\u6587 \U0001f600 {x}'

CONVERSATIONS = [
    [u("Hello!")],
    [s("You are a terse assistant."), u("What is 2+2?")],
    [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")],
    [s("  Be kind.  "), u(TRICKY), a("  Sure:\n{{ }}  "), u("Thanks \u2764")],
    [u("  padded  "), a("reply"), u("")],
]


def render(template, messages, add_generation_prompt, bos, eos, extra):
    compiled = _compile_jinja_template(template)
    return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           bos_token=bos, eos_token=eos, **extra)


def make_cases(template, bos, eos, extra, conversations, error_conversations=()):
    cases = []
    for messages in conversations:
        for gen in (True, False):
            cases.append({"messages": messages, "add_generation_prompt": gen,
                          "expected": render(template, messages, gen, bos, eos, extra)})
    for messages, needle in error_conversations:
        try:
            render(template, messages, True, bos, eos, extra)
        except jinja2.exceptions.TemplateError as e:
            assert needle in str(e), (needle, str(e))
            cases.append({"messages": messages, "error": needle})
            continue
        raise AssertionError("expected an error for %r" % (messages,))
    return cases


def extra_cases(template, bos, eos, extra, conversations):
    """Cases rendered with their own extra variables (tools, enable_thinking), generation prompt on."""
    return [{"messages": messages, "add_generation_prompt": True, "extra": extra,
             "expected": render(template, messages, True, bos, eos, extra)} for messages in conversations]


def write(name, template, bos, eos, extra, cases):
    path = os.path.join(OUT, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"template": template, "bos_token": bos, "eos_token": eos, "extra": extra,
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path, len(cases), "cases")


# Small templates exercising each construct of the Jinja subset, rendered by the same environment
# (messages=[] unless given). The C++ test checks every one byte for byte, or that it raises.
SNIPPETS = [
    ("a{{ 1 }}b{{ 'x' }}{{ \"y\" }}", {}),
    ("{{ true }} {{ False }} {{ none }} {{ None }} {{ 1.5 }} {{ 2.0 }} {{ -3 }}", {}),
    ("{{ [1, 'a', none, true] }} {{ {'k': 'v', 'n': 1} }} {{ [] }} {{ {} }} {{ 'it\\'s' }} {{ ['it\\'s'] }}", {}),
    ("{{ 'a\\nb\\t\\'q\\' \\\"d\\\" \\\\ \\u00e9 \\x41' }}", {}),
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -1 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}", {}),
    ("{{ 1e3 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 1e20 }} {{ 0.00001 }} {{ 123.456 }} {{ 1 / 3 }} {{ 2.5 * 2 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ undefined_var }} {{ 'ab' + 'cd' }} {{ [1] + [2] }} {{ 'ab' * 2 }}", {}),
    ("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 }} {{ 'b' >= 'a' }} {{ [1,2] == [1,2] }} {{ none == none }} {{ 1 == '1' }}", {}),
    ("{{ 'a' in 'cat' }} {{ 3 in [1,2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ 'k' in d }}", {"d": {"k": 1}}),
    ("{{ 1 and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ not 1 == 2 }} {{ 'a' if false else 'b' }} [{{ 'a' if false }}]", {}),
    ("{{ 'x' + '  y  ' | trim + 'z' }} {{ not x is defined }} {{ -1 | abs }}", {}),
    ("{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %}", {"n": 2}),
    ("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
     "{{ loop.revindex }}{{ loop.revindex0 }}{{ x }};{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("{% for k, v in d | items %}{{ k }}={{ v }},{% endfor %}{% for k, v in d.items() %}{{ k }}{% endfor %}",
     {"d": {"a": 1, "b": 2}}),
    ("{% for x in [] %}x{% else %}empty{% endfor %}{% for x in [1,2,3,4] if x is even %}{{ x }}{% endfor %}", {}),
    ("{% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
     "{{ x }}{% endfor %}", {}),
    ("{% for c in 'h\u00e9!' %}[{{ c }}]{% endfor %}{% for k in {'p': 1, 'q': 2} %}{{ k }}{% endfor %}", {}),
    ("{% set x = 1 %}{% for i in [1,2] %}{% set x = i * 10 %}{{ x }},{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(x=1, y='a') %}{% for i in [1,2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}{{ ns.y }}", {}),
    ("{% if true %}{% set x = 5 %}{% endif %}{{ x }}", {}),
    ("{% for i in [1,2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}", {}),
    ("{% for a in [1, 2] %}{% for b in ['x', 'y'] %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}", {}),
    ("a  {{- 'b' -}}  \n c", {}),
    ("a \n {%- if true -%} \n b {%- endif %}", {}),
    ("a {#- c -#} b", {}),
    ("{% if true %}\n  yes\n{% endif %}\nend", {}),
    ("<\n    {% if true %}\nx\n    {% endif %}\n>", {}),
    ("  {{ 'v' }}\nz\n\t{{ 'w' }}", {}),
    ("a  {% if true %}b{% endif %}", {}),
    ("  {%+ if true %}x{% endif %}", {}),
    ("  {# c #}\nx", {}),
    ("{% for x in xs %}\n  {% if not loop.last %}\n  {{ x }},\n  {% endif %}\n{% endfor %}\n", {"xs": [1, 2, 3]}),
    ("{% for x in xs -%}\n  {{ x }}\n{%- endfor %}", {"xs": [1, 2]}),
    ("x\n", {}),
    ("x\n\n", {}),
    ("{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[:2] }}{{ xs[::2] }}{{ xs[::-1] }}{{ xs[1:-1] }}{{ xs[10:] }}",
     {"xs": [1, 2, 3, 4]}),
    ("{{ d['k'] }}{{ d.k }}{{ d.n.m }}{{ d['n']['m'] }}[{{ d.missing }}]{{ s[1:3] }}{{ s[0] }}{{ s[-1] }}",
     {"d": {"k": "v", "n": {"m": 7}}, "s": "hello"}),
    ("{{ s is defined }}{{ q is undefined }}{{ z is none }}{{ s is string }}{{ d is mapping }}{{ l is iterable }}"
     "{{ s is iterable }}{{ i is iterable }}{{ z is not none }}{{ i is number }}{{ q is iterable }}{{ l is sequence }}",
     {"s": "x", "d": {}, "l": [], "z": None, "i": 3}),
    ("{{ 'a' is equalto 'a' }}{{ 3 is odd }}{{ 4 is even }}{{ true is boolean }}{{ 1 is integer }}", {}),
    ("[{{ '  a b \\n' | trim }}]{{ xs | length }}{{ 'h\u00e9' | length }}{{ 'aB' | upper }}{{ 'aB' | lower }}"
     "{{ xs | count }}{{ d | length }}", {"xs": ["a", "b", "c"], "d": {"a": 1}}),
    ("{{ xs | first }}{{ xs | last }}{{ xs | join(', ') }}{{ xs | join }}{{ [1, 2] | join('-') }}", {"xs": ["a", "b", "c"]}),
    ("{{ q | default('dflt') }}{{ '' | default('e') }}{{ '' | default('e', true) }}{{ none | default('n') }}", {}),
    # Dicts whose key order matters are built in the template: the C++ test reads vars with
    # nlohmann::json, which sorts keys.
    ("{% set d = {'b': 1, 'a': 'x\\u0022y'} %}{{ d | tojson }} {{ d | tojson(sort_keys=true) }}", {}),
    ("{{ [1, {'z': none, 'a': [true, 1.5]}, '\u00e9\\n<&>\\u0001'] | tojson }}", {}),
    ("{{ {'a': [1], 'b': {}, 'c': []} | tojson(indent=2) }}", {}),
    ("{{ xs | reject('equalto', 'b') | join }}{{ xs | select('in', ['c']) | list }}", {"xs": ["a", "b", "c"]}),
    ("{{ [{'n': 'p'}, {'n': 'q'}] | map(attribute='n') | join('+') }}{{ ['a', 'b'] | map('upper') | join }}", {}),
    ("{{ ts | selectattr('type', 'equalto', 'f') | map(attribute='n') | list }}"
     "{{ ts | rejectattr('type', 'equalto', 'f') | list | length }}",
     {"ts": [{"type": "f", "n": 1}, {"type": "g", "n": 2}, {"type": "f", "n": 3}]}),
    ("{{ 'a b' | replace(' ', '_') }}{{ 'hello world' | title }}{{ 'hELLO' | capitalize }}{{ 42 | string }}"
     "{{ '7' | int + 1 }}{{ [3, 1, 3] | unique | list }}{{ [1, 2] | reverse | list }}", {}),
    ("[{{ '  x  '.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '  x '.lstrip() }}][{{ ' x  '.rstrip() }}]"
     "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}", {}),
    ("{{ ' a  b '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a,b,c'.split(',', 1) }}{{ 'abc'.split('b')[1] }}", {}),
    ("{{ 'aB'.upper() }}{{ 'aB'.lower() }}{{ 'hello wORLD x1y'.title() }}{{ 'a-b'.replace('-', '+') }}", {}),
    ("{{ d.items() | list }}{{ (1,) }}{{ (1, 'a') }}{{ () }}{{ [(1, 2)] | tojson }}", {"d": {"a": 1, "b": 2}}),
    ("{{ d.keys() | list }}{{ d.values() | list }}{{ d.get('a') }}{{ d.get('z', 9) }}{{ d.get('z') }}",
     {"d": {"a": 1, "b": 2}}),
    ("[{{ nothing }}]{% if nothing %}x{% else %}y{% endif %}{{ nothing is defined }}{{ d.missing is defined }}",
     {"d": {}}),
    ("{{ range(3) | list }}{{ range(1, 7, 2) | list }}{% for i in range(2) %}{{ i }}{% endfor %}", {}),
    ("{{ dict(a=1, b='x') }}{{ namespace(a=1).a }}", {}),
    ("{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
     "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}{% endfor %}",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image"},
                                                {"type": "text", "text": " there"}]},
                   {"role": "user", "content": "plain"}]}),
    ("{% generation %}gen{% endgeneration %}", {}),
    # Errors.
    ("{{ raise_exception('bad roles') }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ nothing.attr }}", {}),
    ("{% set x = 1 %}{% set x.y = 2 %}", {}),
    ("{{ 1 / 0 }}", {}),
]


def make_snippets():
    out = []
    for template, variables in SNIPPETS:
        variables = dict(variables)
        variables.setdefault("messages", [])
        try:
            out.append({"template": template, "vars": variables,
                        "expected": _compile_jinja_template(template).render(**variables)})
        except Exception as e:  # noqa: BLE001 - any Jinja/Python error is an expected failure
            out.append({"template": template, "vars": variables, "error": str(e)})
    path = os.path.join(OUT, "jinja_snippets.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path, len(out), "snippets")


def main():
    os.makedirs(OUT, exist_ok=True)
    make_snippets()
    # Tools with keys in sorted order: nlohmann::json (the C++ API's message type) sorts keys.
    weather_tool = {"function": {"description": "Get the weather", "name": "get_weather",
                                 "parameters": {"properties": {"city": {"type": "string"}},
                                                "required": ["city"], "type": "object"}},
                    "type": "function"}
    tool_call_conv = [u("Weather in Paris?"),
                      {"content": "", "role": "assistant", "tool_calls": [
                          {"function": {"arguments": {"city": "Paris", "unit": "C"}, "name": "get_weather"},
                           "type": "function"}]},
                      {"content": "{\"temp\": 21}", "role": "tool"}]
    smol = smollm2_template() if os.path.exists(GGUF) else None
    if smol is None:
        print("missing", GGUF, file=sys.stderr)
        sys.exit(1)
    write("smollm2", smol, "<|im_start|>", "<|im_end|>", {},
          make_cases(smol, "<|im_start|>", "<|im_end|>", {}, CONVERSATIONS))
    alternating_error = "Conversation roles must alternate"
    write("llama2", LLAMA2, "<s>", "</s>", {},
          make_cases(LLAMA2, "<s>", "</s>", {}, CONVERSATIONS,
                     [([u("a"), u("b")], alternating_error),
                      ([s("sys"), a("first"), u("b")], alternating_error)]))
    write("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>", {},
          make_cases(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", {}, CONVERSATIONS))
    extra31 = {"tools": None, "date_string": "15 Mar 2025"}
    cases31 = make_cases(LLAMA31, "<|begin_of_text|>", "<|eot_id|>", extra31, CONVERSATIONS + [tool_call_conv])
    tools_extra = {"tools": [weather_tool], "date_string": "15 Mar 2025"}
    cases31 += extra_cases(LLAMA31, "<|begin_of_text|>", "<|eot_id|>", tools_extra,
                           ([u("Weather in Paris?")], [s("Use tools."), u("Weather?")], tool_call_conv))
    write("llama3_1", LLAMA31, "<|begin_of_text|>", "<|eot_id|>", extra31, cases31)
    cases25 = make_cases(QWEN25, "", "<|im_end|>", {"tools": None}, CONVERSATIONS + [tool_call_conv])
    two_tools = tool_call_conv + [{"content": "sunny", "role": "tool"}]
    cases25 += extra_cases(QWEN25, "", "<|im_end|>", {"tools": [weather_tool]},
                           ([u("Weather in Paris?")], [s("Use tools."), u("Weather?")], tool_call_conv,
                            two_tools))
    write("qwen2_5", QWEN25, "", "<|im_end|>", {"tools": None}, cases25)
    write("qwen2", QWEN2, "", "<|im_end|>", {},
          make_cases(QWEN2, "", "<|im_end|>", {}, CONVERSATIONS))
    thinking = [u("What is 2+2?"), a("<think>\nAdd them.\n</think>\n\n4"), u("And 3+3?")]
    last_thought = [u("Hi"), a("<think>\nGreet back.\n</think>\n\nHello!")]
    cases3 = make_cases(QWEN3, "", "<|im_end|>", {"tools": None},
                        CONVERSATIONS + [tool_call_conv, thinking, last_thought])
    cases3 += extra_cases(QWEN3, "", "<|im_end|>", {"tools": [weather_tool]},
                          ([u("Weather in Paris?")], [s("Use tools."), u("Weather?")], tool_call_conv))
    cases3 += extra_cases(QWEN3, "", "<|im_end|>", {"tools": None, "enable_thinking": False},
                          ([u("Hello!")], thinking))
    write("qwen3", QWEN3, "", "<|im_end|>", {"tools": None}, cases3)


if __name__ == "__main__":
    main()
