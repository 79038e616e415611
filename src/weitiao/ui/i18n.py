"""The web UI in English and Chinese: every label and message of the pages and of ui.js, by the English text.

The language is the `lang` query parameter (which the header's switch sets, and which is remembered in a cookie),
else the cookie, else the browser's Accept-Language (Chinese when zh comes before en), else English. A text with
no translation shows in English, and tests/ui checks that none is missing. Messages from the CLI's own checks (a
bad config field, a bad row) stay in English, as the CLI prints them.
"""
from __future__ import annotations

LANGUAGES = ("en", "zh")

ZH = {
    # header and titles
    "New run": "新建训练", "Runs": "训练列表", "runs in": "训练目录", "Chat with": "对话：",
    "Which answer is better?": "哪个回答更好？", "Chat": "对话", "Preferences": "偏好标注",
    # New run
    "Model": "模型", "Task": "任务", "Data": "数据", "Format": "格式", "Train": "训练集", "Validation": "验证集",
    "Test": "测试集", "Upload a file": "上传文件",
    "a bundled name, a local folder, a .gguf file, a hub id (OWNER/NAME) or modelscope:OWNER/NAME":
        "内置模型名、本地目录、.gguf 文件、Hub id（OWNER/NAME）或 modelscope:OWNER/NAME",
    "a file, folder or hub dataset per line": "每行一个文件、目录或 Hub 数据集",
    "an uploaded file is saved under": "上传的文件保存在", "and added to Train": "下，并加入训练集",
    "Check data": "检查数据", "Method and training": "方法与训练", "Method": "方法", "LoRA rank": "LoRA 秩",
    "Max length": "最大长度", "Steps": "步数", "(epochs)": "（按轮数）", "Epochs": "轮数", "Batch size": "批大小",
    "Learning rate": "学习率", "Validate every": "每隔多少步验证", "steps": "步", "Metrics": "指标",
    "Rewards (task grpo)": "奖励（grpo 任务）", "e.g. count_list, list_correct": "例如 count_list, list_correct",
    "e.g. count_list, count_close": "例如 count_list, count_close",
    "memory estimate: fill in the model and data": "显存估算：请先填写模型和数据", "Run": "运行",
    "Run name": "训练名称", "its folder under": "保存在此目录下：", "Show config": "查看配置",
    "Launch": "开始训练",
    # a run
    "status": "状态", "task": "任务", "method": "方法", "model": "模型", "Stop (saves a checkpoint)": "停止（保存检查点）",
    "Resume": "继续训练", "pairs": "对", "ties": "平局", "Loss": "损失曲线", "Results": "结果",
    "test split": "测试集", "rows": "行", "base": "基座", "tuned": "微调后",
    "the base-vs-tuned results appear when the run has finished": "训练结束后显示基座与微调后的对比结果",
    "Open the full report": "打开完整报告", "Ship": "导出与部署", "Export as": "导出为",
    "merged Hugging Face folder": "合并后的 Hugging Face 目录", "GGUF + Ollama Modelfile": "GGUF + Ollama Modelfile",
    "GGUF type": "GGUF 类型", "Export": "导出", "Serve on port": "服务端口", "Serve": "启动服务", "Log": "日志",
    # runs
    "run": "训练", "test (base → tuned)": "测试（基座 → 微调后）",
    "no runs yet under": "这里还没有训练：", "start one on the New run page, or with weitiao train":
        "在“新建训练”页面开始一个，或运行 weitiao train",
    "starting": "启动中", "running": "训练中", "finished": "已完成", "failed": "失败", "interrupted": "已中断",
    # chat
    "the same prompt to the base model and the tuned one, with the run's chat template, greedy":
        "同一个问题分别发给基座模型和微调后的模型，使用该训练的对话模板，贪心解码",
    "Ask something": "输入问题", "Send to both": "同时发送",
    # preferences
    "Two answers in random order. Choices go to": "两个回答顺序随机。选择结果写入",
    "(prompt, chosen, rejected: what task dpo and reward train on); ties to preference_ties.jsonl.":
        "（prompt、chosen、rejected：dpo 和 reward 任务的训练数据）；平局写入 preference_ties.jsonl。",
    "Answers from": "回答来自", "other run": "另一个训练", "(no other finished run)": "（没有其他已完成的训练）",
    "A prompt from the test split": "从测试集取一个问题", "or type a prompt": "或输入一个问题", "Ask": "提问",
    "A is better": "A 更好", "B is better": "B 更好", "Tie": "平局", "recorded:": "已记录：",
    "Train DPO on these": "用这些数据训练 DPO",
    "the base model against the tuned one": "基座模型 对 微调后的模型", "two samples of the tuned model":
        "微调后模型的两次采样", "this run against another run": "本训练 对 另一个训练",
    # ui.js
    "data check passed": "数据检查通过", "bad row(s)": "行有问题", "where": "位置", "problem": "问题",
    "memory estimate:": "显存估算：",
    "(for rows of the full max length; the run estimates again from its longest row)":
        "（按最大长度的行估算；训练开始时会按最长的行重新估算）",
    "checking ...": "检查中……", "launched": "已启动", "already running": "已在运行", "config": "配置",
    "exporting to": "正在导出到", "(see the log)": "（见日志）", "serving at": "服务地址",
    "(OpenAI API; see the log)": "（OpenAI 兼容接口；见日志）",
}
MESSAGES = {"zh": ZH}


def language(query: str | None, cookie: str | None, accept: str | None) -> str:
    """en or zh: the query parameter, the cookie, then the first of zh/en in Accept-Language, then en."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    for part in (accept or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def translator(lang: str):
    """t(text): `text` in `lang` (itself in English, or where no translation exists)."""
    table = MESSAGES.get(lang, {})
    return lambda text: table.get(text, text)
