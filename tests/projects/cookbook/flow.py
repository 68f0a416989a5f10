from pocketflow import Flow

from flows import register
from nodes import AnswerNode, GetQuestionNode, NoQuestionNode


def create_qa_flow():
    """Answer a question with the model."""
    get_question_node = GetQuestionNode()
    answer_node = AnswerNode()
    get_question_node >> answer_node
    get_question_node - "empty" >> NoQuestionNode()
    return Flow(start=get_question_node)


qa_flow = create_qa_flow()

# The one line pocketrun adds to the project: the rest runs as it did under plain PocketFlow.
register("qa", create_qa_flow, output=["question", "answer"])
