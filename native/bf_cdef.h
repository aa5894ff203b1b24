/* cffi declarations (API mode). The generated C module #includes the real llama.h and
 * bf_shim.h and is compiled by CMake with -Werror for pointer/int mismatches, so any drift
 * between these lines and the headers is a compile error, not a silent ABI bug.
 * Structs end in "...;": the compiler fills in layout and the fields we do not name. */

typedef int32_t llama_pos;
typedef int32_t llama_token;
typedef int32_t llama_seq_id;
typedef uint32_t llama_state_seq_flags;
struct llama_vocab;
struct llama_model;
struct llama_context;
struct llama_sampler;
typedef struct llama_memory_i * llama_memory_t;

#define LLAMA_DEFAULT_SEED ...
#define LLAMA_TOKEN_NULL ...

enum llama_pooling_type {
    LLAMA_POOLING_TYPE_UNSPECIFIED, LLAMA_POOLING_TYPE_NONE, LLAMA_POOLING_TYPE_MEAN,
    LLAMA_POOLING_TYPE_CLS, LLAMA_POOLING_TYPE_LAST, LLAMA_POOLING_TYPE_RANK, ...
};
enum llama_load_mode {
    LLAMA_LOAD_MODE_AUTO = -1, LLAMA_LOAD_MODE_NONE = 0, LLAMA_LOAD_MODE_MMAP = 1, ...
};
enum llama_flash_attn_type {
    LLAMA_FLASH_ATTN_TYPE_AUTO, LLAMA_FLASH_ATTN_TYPE_DISABLED, LLAMA_FLASH_ATTN_TYPE_ENABLED, ...
};

typedef struct llama_token_data { llama_token id; float logit; float p; } llama_token_data;
typedef struct llama_token_data_array {
    llama_token_data * data; size_t size; int64_t selected; bool sorted;
} llama_token_data_array;
typedef struct llama_batch {
    int32_t n_tokens;
    llama_token * token;
    float * embd;
    llama_pos * pos;
    int32_t * n_seq_id;
    llama_seq_id ** seq_id;
    int8_t * logits;
} llama_batch;
typedef struct llama_logit_bias { llama_token token; float bias; } llama_logit_bias;
typedef struct llama_sampler_chain_params { bool no_perf; } llama_sampler_chain_params;

struct llama_model_params {
    int32_t n_gpu_layers;
    int32_t main_gpu;
    enum llama_load_mode load_mode;
    bool vocab_only;
    bool check_tensors;
    bool use_extra_bufts;
    ...;
};
struct llama_context_params {
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_ubatch;
    uint32_t n_seq_max;
    int32_t  n_threads;
    int32_t  n_threads_batch;
    enum llama_pooling_type pooling_type;
    enum llama_flash_attn_type flash_attn_type;
    bool embeddings;
    bool offload_kqv;
    bool no_perf;
    bool kv_unified;
    ...;
};

struct llama_model_params   llama_model_default_params(void);
struct llama_context_params llama_context_default_params(void);
struct llama_sampler_chain_params llama_sampler_chain_default_params(void);
void llama_backend_init(void);
const char * llama_print_system_info(void);
bool llama_supports_gpu_offload(void);
bool llama_supports_mmap(void);
size_t llama_max_parallel_sequences(void);

struct llama_model * llama_model_load_from_file(const char * path_model, struct llama_model_params params);
void llama_model_free(struct llama_model * model);
struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params);
void llama_free(struct llama_context * ctx);

uint32_t llama_n_ctx(const struct llama_context * ctx);
uint32_t llama_n_ctx_seq(const struct llama_context * ctx);
uint32_t llama_n_batch(const struct llama_context * ctx);
uint32_t llama_n_ubatch(const struct llama_context * ctx);
uint32_t llama_n_seq_max(const struct llama_context * ctx);
llama_memory_t llama_get_memory(const struct llama_context * ctx);
enum llama_pooling_type llama_pooling_type(const struct llama_context * ctx);
void llama_set_n_threads(struct llama_context * ctx, int32_t n_threads, int32_t n_threads_batch);
void llama_set_embeddings(struct llama_context * ctx, bool embeddings);
void llama_synchronize(struct llama_context * ctx);

const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
int32_t llama_model_n_ctx_train(const struct llama_model * model);
int32_t llama_model_n_embd(const struct llama_model * model);
int32_t llama_model_n_layer(const struct llama_model * model);
int32_t llama_model_n_head(const struct llama_model * model);
int32_t llama_model_meta_val_str(const struct llama_model * model, const char * key, char * buf, size_t buf_size);
int32_t llama_model_meta_count(const struct llama_model * model);
int32_t llama_model_meta_key_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_meta_val_str_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size);
uint64_t llama_model_size(const struct llama_model * model);
uint64_t llama_model_n_params(const struct llama_model * model);
const char * llama_model_chat_template(const struct llama_model * model, const char * name);
bool llama_model_has_encoder(const struct llama_model * model);
bool llama_model_is_recurrent(const struct llama_model * model);
bool llama_model_is_hybrid(const struct llama_model * model);
bool llama_model_has_decoder(const struct llama_model * model);

int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token);
bool llama_vocab_is_control(const struct llama_vocab * vocab, llama_token token);
llama_token llama_vocab_bos(const struct llama_vocab * vocab);
llama_token llama_vocab_eos(const struct llama_vocab * vocab);
llama_token llama_vocab_eot(const struct llama_vocab * vocab);
llama_token llama_vocab_nl(const struct llama_vocab * vocab);
llama_token llama_vocab_pad(const struct llama_vocab * vocab);
llama_token llama_vocab_fim_pre(const struct llama_vocab * vocab);
llama_token llama_vocab_fim_suf(const struct llama_vocab * vocab);
llama_token llama_vocab_fim_mid(const struct llama_vocab * vocab);
bool llama_vocab_get_add_bos(const struct llama_vocab * vocab);
bool llama_vocab_get_add_eos(const struct llama_vocab * vocab);
const char * llama_vocab_get_text(const struct llama_vocab * vocab, llama_token token);

int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len,
                       llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special);
int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf,
                             int32_t length, int32_t lstrip, bool special);
int32_t llama_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens,
                         char * text, int32_t text_len_max, bool remove_special, bool unparse_special);

void llama_memory_clear(llama_memory_t mem, bool data);
bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1);
void llama_memory_seq_cp(llama_memory_t mem, llama_seq_id seq_id_src, llama_seq_id seq_id_dst, llama_pos p0, llama_pos p1);
void llama_memory_seq_keep(llama_memory_t mem, llama_seq_id seq_id);
void llama_memory_seq_add(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos delta);
llama_pos llama_memory_seq_pos_min(llama_memory_t mem, llama_seq_id seq_id);
llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id);
bool llama_memory_can_shift(llama_memory_t mem);

size_t llama_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id);
size_t llama_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id);
size_t llama_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, llama_seq_id dest_seq_id);

int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
int32_t llama_encode(struct llama_context * ctx, struct llama_batch batch);
float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
float * llama_get_embeddings_ith(struct llama_context * ctx, int32_t i);
float * llama_get_embeddings_seq(struct llama_context * ctx, llama_seq_id seq_id);
bool llama_get_causal_attn(const struct llama_context * ctx);

struct llama_sampler * llama_sampler_chain_init(struct llama_sampler_chain_params params);
void llama_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl);
int32_t llama_sampler_chain_n(const struct llama_sampler * chain);
void llama_sampler_accept(struct llama_sampler * smpl, llama_token token);
void llama_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p);
void llama_sampler_reset(struct llama_sampler * smpl);
void llama_sampler_free(struct llama_sampler * smpl);
llama_token llama_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx);
struct llama_sampler * llama_sampler_init_greedy(void);
struct llama_sampler * llama_sampler_init_dist(uint32_t seed);
struct llama_sampler * llama_sampler_init_top_k(int32_t k);
struct llama_sampler * llama_sampler_init_top_p(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_min_p(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_typical(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_temp(float t);
struct llama_sampler * llama_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root);
struct llama_sampler * llama_sampler_init_grammar_lazy_patterns(const struct llama_vocab * vocab,
        const char * grammar_str, const char * grammar_root, const char ** trigger_patterns,
        size_t num_trigger_patterns, const llama_token * trigger_tokens, size_t num_trigger_tokens);
struct llama_sampler * llama_sampler_init_penalties(int32_t n_vocab, int32_t penalty_last_n, float penalty_repeat,
        float penalty_freq, float penalty_present);
struct llama_sampler * llama_sampler_init_logit_bias(int32_t n_vocab, int32_t n_logit_bias, const llama_logit_bias * logit_bias);

/* ---- our shim (native/bf_shim.h) ---- */
void bf_log_set_level(int min_level);
const char * bf_build_info(void);
int bf_selftest_quantized(char * report, size_t report_size);
int bf_madvise(void * addr, size_t length, int advice);
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

int32_t bf_decode_run(struct llama_context * ctx, int32_t n_seqs, const int32_t * seq_ids, int32_t * tokens,
                      int32_t * pos, struct llama_sampler ** pre, struct llama_sampler ** post, const int32_t * greedy,
                      const int32_t * stop_on_eog, const uint8_t * stop_bytes, int32_t max_steps,
                      const volatile int32_t * interrupt, llama_token_data * cand, int32_t n_vocab, int32_t * out,
                      bf_run_stream * streams, int32_t * status);
int32_t bf_stream_format(const char * head, int32_t head_len, const char * tail, int32_t tail_len,
                         int64_t number, const char * number_tail, int32_t number_tail_len,
                         const char * pending, int32_t pending_len, int32_t rstrip, const char * piece, int32_t n,
                         char * out, int32_t cap, int32_t * held);
int32_t bf_fill_candidates(struct llama_context * ctx, int32_t idx, struct llama_sampler * pre,
                           llama_token_data * cand, int32_t n_vocab, float * adjusted);
char * bf_json_schema_to_grammar(const char * schema_json);
char * bf_chat_templates_new(const struct llama_model * model, const char * template_override, void ** out_handle);
void bf_chat_templates_free(void * handle);
char * bf_chat_templates_caps(void * handle);
char * bf_chat_apply(void * handle, const char * inputs_json);
char * bf_chat_parse(const char * text, int is_partial, const char * params_json);
typedef struct bf_chat_parser bf_chat_parser;
bf_chat_parser * bf_chat_parser_init(const char * params_json);
char * bf_chat_parser_parse(const bf_chat_parser * parser, const char * text, int is_partial);
void bf_chat_parser_free(bf_chat_parser * parser);
struct llama_model * bf_model_load(const char * path, struct llama_model_params * params, const char * rpc_servers,
                                   int fit, uint32_t n_ctx, uint32_t n_seq, char ** plan);
char * bf_devices(void);
void bf_string_free(char * s);
