//! File search and web search capabilities of the agent.
