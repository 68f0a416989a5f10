# A stand-in for the project's model client: canned answers, so the project runs offline
# and gives the same text every time (a real project calls its LLM provider here).
ANSWERS = {
    "pocketflow": "PocketFlow is a 100-line framework: nodes joined into a flow by actions.",
    "pocketrun": "pocketrun runs PocketFlow flows durably behind an API.",
}


def call_llm(prompt):
    for word, answer in ANSWERS.items():
        if word in prompt.lower():
            return answer
    return f"I have no canned answer for: {prompt}"


if __name__ == "__main__":
    print(call_llm("What is PocketFlow?"))
