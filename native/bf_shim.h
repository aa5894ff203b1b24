/* botframework's C ABI over llama.cpp's C++ `common` library.
 *
 * Everything structured crosses as a JSON string (UTF-8, NUL-terminated). Functions that
 * return `char *` hand ownership to the caller, who frees it with bf_string_free(). Errors
 * are reported in-band as {"error": "..."}; no C++ exception ever crosses this boundary.
 */
#ifndef BF_SHIM_H
#define BF_SHIM_H

#include <stddef.h>

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Route llama.cpp/ggml logs to stderr, dropping messages below min_level (ggml_log_level). */
void bf_log_set_level(int min_level);

/* Static JSON: compiler, CPU features compiled in, AMX workaround flag, llama.cpp pin. */
const char * bf_build_info(void);

/* Multiply Q4_0/Q4_1/Q8_0 weights by a 32-row batch through every CPU buffer type (AMX and
 * repacked kernels included) and compare with a float reference. Returns 0 on success, the
 * number of failed cases otherwise; a human-readable report is written to `report`. */
int bf_selftest_quantized(char * report, size_t report_size);

/* madvise(addr, length, advice): 0, or the errno (ENOSYS where there is no madvise). Used for
 * transparent huge pages over llama.cpp's weight and KV buffers (botframework/native/hugepages.py). */
int bf_madvise(void * addr, size_t length, int advice);

/* One token from output `idx` of the context's last decode, without a grammar: the logits go
 * through `pre` (may be NULL; it only adjusts logits) and then `post`, and the token is
 * accepted by both. With `greedy` and no `pre`, the argmax of the logits (first of equal
 * maxima), without filling `cand`; otherwise `cand` (n_vocab entries) is the scratch the
 * samplers work in. Returns the token, -1 if the output has no logits, -2 if `post` chose
 * nothing finite (every candidate at -inf). The engine's per-token path: one call instead of
 * filling candidates from Python (botframework/native/sampler.py). */
int32_t bf_sample(struct llama_context * ctx, int32_t idx, struct llama_sampler * pre,
                  struct llama_sampler * post, int greedy, llama_token_data * cand, int32_t n_vocab);

/* A stream whose running text a run of steps sends to the client itself (bf_decode_run). */
typedef struct bf_run_stream {
    int32_t fd;             /* the client's socket: non-blocking sends; -1: not sent here */
    const char * head;      /* a chunk is head + the text as a JSON string (quoted) + tail ... */
    int32_t head_len;
    const char * tail;
    int32_t tail_len;       /* ... framed as an HTTP/1.1 chunk */
    int64_t number;         /* in/out, >= 0: tail is followed by this number and number_tail, and it
                               counts up with each chunk taken (an event's sequence_number); -1: none */
    const char * number_tail;
    int32_t number_tail_len;
    int32_t rstrip;         /* trailing whitespace waits for the text that follows it */
    int32_t budget;         /* at most the first `budget` tokens of the run are sent */
    char * pending;         /* in/out: the whitespace held (rstrip) */
    int32_t pending_len;
    int32_t pending_cap;
    int32_t n_sent;         /* out: the run's first n_sent tokens were taken (sent, or held) */
    int32_t error;          /* out: 0; EAGAIN: the socket took nothing of the next chunk (not
                               taken); another errno: a taken token's send failed */
    char * rest;            /* out: the end of the last taken chunk, which the socket did not take */
    int32_t rest_len;
    int32_t rest_cap;
} bf_run_stream;

/* Up to max_steps decode steps of n_seqs running sequences, one token each per step, with no
 * return to the caller in between: sequence i decodes tokens[i] at pos[i] (seq_ids[i], logits
 * on), samples its next token as bf_sample does (pre[i] may be NULL, post[i], greedy[i]) into
 * out[step * n_seqs + i], and decodes that token in the next step; tokens[] and pos[] end up
 * at the last sampled tokens and their positions. Stops after a step in which a sequence with
 * stop_on_eog[i] sampled an end-of-generation token, or in which sequence i sampled a token
 * whose text has a byte set in its 256-bit map stop_bytes[i * 32 .. i * 32 + 31] (stop_bytes
 * may be NULL; an empty map: none; the last bytes of the request's stop strings: the caller
 * looks for them), or once *interrupt is nonzero (another thread wants the engine or the
 * cores), or after max_steps. Returns the steps done; *status is 0, or llama_decode's nonzero
 * result, or -1001 / -1002 (bf_sample's -1 / -2) for the step that failed (not counted; a
 * failed sampling step has advanced the samplers of the sequences before it), or -1003 (no
 * memory, nothing ran). The engine's steady path for plain sequences (engine.run_steps).
 * streams (NULL, or one per sequence; fd -1: none): sequence i's tokens are sent to its client
 * as they are sampled, each one's chunk in one non-blocking send, while every token before it
 * in the run was taken: a token that is not plain ASCII text, has a byte in its map, is an end
 * of generation or past the budget, or that the socket does not take whole, ends the run after
 * its step, and the caller sends the rest of the text its own way. */
int32_t bf_decode_run(struct llama_context * ctx, int32_t n_seqs, const int32_t * seq_ids, int32_t * tokens,
                      int32_t * pos, struct llama_sampler ** pre, struct llama_sampler ** post, const int32_t * greedy,
                      const int32_t * stop_on_eog, const uint8_t * stop_bytes, int32_t max_steps,
                      const volatile int32_t * interrupt, llama_token_data * cand, int32_t n_vocab, int32_t * out,
                      bf_run_stream * streams, int32_t * status);

/* The chunk a run of steps sends for held whitespace `pending` + an ASCII `piece` (the frame
 * bf_decode_run's streams send: head + the text as a JSON string + tail (+ number + number_tail
 * when number >= 0), as an HTTP/1.1 chunk;
 * with rstrip, trailing whitespace is held): its length in `out` (0: nothing goes out now),
 * *held the length of the whitespace held after it; -1 when it does not fit `cap`. For tests. */
int32_t bf_stream_format(const char * head, int32_t head_len, const char * tail, int32_t tail_len,
                         int64_t number, const char * number_tail, int32_t number_tail_len,
                         const char * pending, int32_t pending_len, int32_t rstrip, const char * piece, int32_t n,
                         char * out, int32_t cap, int32_t * held);

/* The candidates for a sampler that needs them outside C (a grammar): `cand` gets every
 * token's id and logit from output `idx` (p = 0), then `pre` (may be NULL) adjusts the logits
 * in place; `adjusted` (may be NULL) gets a copy of the adjusted logits. Returns 0, or -1 if
 * the output has no logits. (Filling numpy's structured array from Python cost ~57 us.) */
int32_t bf_fill_candidates(struct llama_context * ctx, int32_t idx, struct llama_sampler * pre,
                           llama_token_data * cand, int32_t n_vocab, float * adjusted);

/* {"schema": {...}} -> {"grammar": "..."} | {"error": "..."} */
char * bf_json_schema_to_grammar(const char * schema_json);

/* Load the model's chat templates (or `template_override` when non-empty). Returns NULL and
 * sets *out_handle on success, or an error JSON string. */
char * bf_chat_templates_new(const struct llama_model * model, const char * template_override, void ** out_handle);
void   bf_chat_templates_free(void * handle);

/* {"caps": {"supports_tools", "supports_tool_calls", "supports_system_role",
 * "supports_parallel_tool_calls", ...}} of the template that renders requests with tools. */
char * bf_chat_templates_caps(void * handle);

/* OpenAI-style inputs {"messages", "tools", "tool_choice", "parallel_tool_calls",
 * "json_schema", "grammar", "add_generation_prompt", "enable_thinking", "reasoning_format",
 * "chat_template_kwargs"} -> {"prompt", "grammar", "grammar_lazy", "grammar_triggers",
 * "preserved_tokens", "additional_stops", "format", "format_name", "parser",
 * "generation_prompt"} | {"error": "..."} */
char * bf_chat_apply(void * handle, const char * inputs_json);

/* Parse model output with the params that bf_chat_apply returned ({"format", "parser",
 * "generation_prompt", "reasoning_format", "parse_tool_calls"}) -> OpenAI message JSON
 * {"role", "content", "reasoning_content", "tool_calls"} | {"error": "..."} */
char * bf_chat_parse(const char * text, int is_partial, const char * params_json);
typedef struct bf_chat_parser bf_chat_parser;
bf_chat_parser * bf_chat_parser_init(const char * params_json);
char * bf_chat_parser_parse(const bf_chat_parser * parser, const char * text, int is_partial);
void bf_chat_parser_free(bf_chat_parser * parser);

/* Load a GGUF with its offloaded layers on this build's GPUs plus the llama.cpp RPC servers in
 * `rpc_servers` ("host:port,host:port", may be NULL or empty). With `fit` nonzero,
 * params->n_gpu_layers (and the split over several devices) is chosen by llama.cpp's
 * common_fit_params so that the weights and a context of n_ctx cells for n_seq sequences fit
 * the devices' free memory; 0 when there is no device. Returns the model, or NULL. *plan gets
 * {"devices": [...], "n_gpu_layers", "tensor_split", "fit"} or {"error"} (free it). */
struct llama_model * bf_model_load(const char * path, struct llama_model_params * params, const char * rpc_servers,
                                   int fit, uint32_t n_ctx, uint32_t n_seq, char ** plan);

/* {"devices": [{"name", "description", "kind", "backend", "free_bytes", "total_bytes"}], "rpc": bool,
 *  "rpc_protocol": [major, minor, patch]} */
char * bf_devices(void);

void bf_string_free(char * s);

#ifdef __cplusplus
}
#endif

#endif /* BF_SHIM_H */
