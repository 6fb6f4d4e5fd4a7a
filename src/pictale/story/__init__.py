"""Stories: the planner that turns chats and story text into scene prompts (LLM or keyword rules)."""
