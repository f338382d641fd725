// Package translate converts requests, answers, streams and errors between
// the three chat dialects the proxy serves: Anthropic Messages
// (/v1/messages), OpenAI Chat Completions (/chat/completions) and OpenAI
// Responses (/responses). It is pure: it reads and writes bytes and knows
// nothing of HTTP routing, keys or the model catalog.
//
// Each dialect has a reader into one internal representation ([RequestIR],
// [ResponseIR], stream events) and a writer out of it, so every direction is
// a reader plus a writer. The entry points are [Request], [Response],
// [NewStream] and [Error].
//
// # What is kept
//
// Instructions (Messages "system", Chat system/developer messages, Responses
// "instructions" and system/developer items), multi-turn text, images
// (base64 and URL), function tools with their JSON Schema, tool_choice,
// parallel tool calls, tool calls and results with their ids byte for byte,
// reasoning effort or thinking budget, max tokens, temperature, top_p,
// stop sequences, the user id, finish reasons and usage.
//
// # Rules where the dialects differ
//
//   - Instructions: Messages has only the top-level "system"; system and
//     developer turns found in the middle of a Chat or Responses
//     conversation are hoisted into it, in order. Toward Responses, several
//     top-level instructions are joined with a blank line.
//   - Turns: consecutive turns of one role are merged toward Messages (the
//     API does the same); tool results open the user turn. Toward Chat, a
//     user turn's tool results become "tool" messages placed before the rest
//     of the turn.
//   - Tool ids: kept byte for byte. Toward Messages, an id outside
//     ^[a-zA-Z0-9_-]+$ (which the API refuses) is escaped the same way in
//     the call and its result. Responses function_call items are written
//     without their item id (optional on input); an answer's items get
//     "fc_<call id>".
//   - Tool schemas: Responses treats a missing "strict" as true; the writer
//     sets strict: false unless the client said otherwise.
//   - Temperature: the value is kept (its meaning is close on both scales
//     for the usual 0-1 values); toward Messages, whose range is 0-1, a
//     value above 1 is clamped to 1 and reported. With thinking on, Messages
//     refuses any temperature but 1: it is dropped and reported.
//   - Max tokens: Messages requires max_tokens; when the client gave none it
//     is [Options].MaxOutputTokens or [DefaultMaxTokens].
//   - Reasoning: effort and budget convert with the table in effort.go;
//     with [Options].NoReasoning (a target model that takes none) the
//     request's reasoning is dropped and reported;
//     toward Messages the budget is clamped below max_tokens, and thinking
//     is left off (and reported) when max_tokens is under 1025, when the
//     tool choice forces a tool (the API refuses both), or when the history
//     ends in a tool loop whose assistant turn has no thinking block (the
//     API requires one). Toward Responses, a Messages client that enabled
//     thinking gets reasoning.summary "auto" (visible thinking), and
//     encrypted reasoning is requested because the conversation is not
//     stored (store: false).
//   - Reasoning output and history: see reasoning.go. A Messages client
//     sees OpenAI reasoning as thinking blocks, a Responses client sees
//     Anthropic thinking as reasoning items; the opaque part is wrapped so
//     the upstream gets its own bytes back in the next turn. Chat has no
//     reasoning in its public API: reasoning output toward Chat, and
//     reasoning history from or toward Chat, is dropped.
//   - Stop sequences: Responses has none; dropped and reported. An answer
//     that ended on a stop sequence is "stop" in Chat and "completed" in
//     Responses.
//   - Usage: the IR counts input like OpenAI (cached tokens included);
//     Messages input_tokens = input - cache read - cache write. Cache writes
//     exist only in Messages; reasoning tokens only in the OpenAI dialects.
//   - Finish reasons: end_turn/stop/completed; max_tokens/length/incomplete
//     (max_output_tokens); tool_use/tool_calls/completed with function
//     calls; refusal/content_filter/incomplete (content_filter); pause_turn
//     becomes stop in the OpenAI dialects.
//   - Output formats (structured outputs): Chat response_format and
//     Responses text.format map to each other; toward Messages a JSON
//     Schema format becomes output_config.format and json_object, which
//     Messages lacks, is dropped and reported. OpenAI requires a schema
//     name: a format from Messages is named "response".
//   - Errors: an upstream error body is re-rendered in the client's dialect
//     with the upstream's status; the error type follows the status where
//     the dialects' types differ.
//
// # What is dropped
//
// Fields with no counterpart in the target are left out and named in
// [Info].Dropped, for a debug log: Messages top_k, cache_control, output
// formats other than JSON Schema, server tools (web search, bash...), and
// content blocks other than text, image, tool use/result and thinking; Chat
// seed, logprobs, penalties and other sampling knobs, non-function tools;
// Responses include, prompt_cache_key, text.verbosity, truncation, store and
// built-in tools; image detail toward Messages; images in tool results and
// in assistant turns toward Chat (text only there); a tool result's
// is_error outside Messages. Unknown fields are reported at the top level
// of a request; inside turns (e.g. Chat's message "name") they are left out
// without a report.
//
// Requests that cannot be translated without changing their meaning are
// refused with an [InputError] (the proxy answers 400 in the client's
// dialect): Chat n > 1, Responses previous_response_id (the history lives on
// a server the target cannot reach), content types with no counterpart in
// the OpenAI dialects (files, audio) and Anthropic image sources other than
// base64 and URL.
//
// # Streams
//
// A [Stream] is an io.Writer fed the upstream's SSE bytes in any chunking;
// each upstream event is translated and written to the client as it
// arrives (see stream.go for the event order of each dialect). Upstream
// pings become the client dialect's keep-alive, and [Stream.KeepAlive]
// synthesizes one. A stream that ends before its final event ends, in the
// client's dialect, with an error event.
package translate
