import sys

from flow import qa_flow


def main():
    shared = {"question": " ".join(sys.argv[1:]) or "What is PocketFlow?", "answer": None}
    qa_flow.run(shared)
    print("Question:", shared["question"])
    print("Answer:", shared["answer"])


if __name__ == "__main__":
    main()
