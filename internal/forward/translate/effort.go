package translate

// Reasoning effort (OpenAI) and thinking budget (Anthropic) are converted
// with one table. Effort → budget: minimal 1024, low 4096, medium 10000,
// high 24000, xhigh and max 32000 (then clamped below max_tokens). Budget →
// effort: < 4096 low, < 16384 medium, else high (minimal is never derived:
// some OpenAI models refuse it with tools).

func effortBudget(effort string) int {
	switch effort {
	case "minimal":
		return 1024
	case "low":
		return 4096
	case "", "medium":
		return 10000
	case "high":
		return 24000
	default: // xhigh, max
		return 32000
	}
}

func budgetEffort(budget int) string {
	switch {
	case budget <= 0:
		return "medium"
	case budget < 4096:
		return "low"
	case budget < 16384:
		return "medium"
	}
	return "high"
}

// anthropicEffort maps an OpenAI effort to output_config.effort.
func anthropicEffort(effort string) string {
	switch effort {
	case "minimal", "low":
		return "low"
	case "medium", "high", "xhigh", "max":
		return effort
	}
	return ""
}

// openAIEffort is the reasoning_effort for the IR's reasoning.
func openAIEffort(r *Reasoning) string {
	if r.Effort != "" {
		return r.Effort
	}
	if r.Adaptive {
		return "medium"
	}
	return budgetEffort(r.Budget)
}
