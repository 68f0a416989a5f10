from pocketflow import Node
from utils.call_llm import call_llm


class GetQuestionNode(Node):
    def prep(self, shared):
        return shared.get("question", "")

    def exec(self, question):
        return question.strip()

    def post(self, shared, prep_res, exec_res):
        shared["question"] = exec_res
        return "default" if exec_res else "empty"


class AnswerNode(Node):
    def prep(self, shared):
        return shared["question"]

    def exec(self, question):
        return call_llm(question)

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res


class NoQuestionNode(Node):
    def post(self, shared, prep_res, exec_res):
        shared["answer"] = "Ask me a question first."
