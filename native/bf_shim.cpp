// botframework shim: extern "C" over llama.cpp's common library (see bf_shim.h).
//
//   JSON string in -> nlohmann/common_json -> common_* call -> JSON string out
//
// Every entry point catches all exceptions and reports them as {"error": ...}.

#include "bf_shim.h"

#include "chat.h"
#include "fit.h"
#include "json-schema-to-grammar.h"
#include "json.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-rpc.h"

#include <nlohmann/json.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <sys/socket.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// A memory budget for chat template renders.
//
// llama.cpp's Jinja engine evaluates 'x' * 1000000000 or range(1000000000) in one expression
// with no limit: gigabytes, then the OOM killer takes the whole server. The Python guard
// (jinja_guard.py) bounds loop steps and nesting but cannot see the size of one expression's
// result, so the limit sits where the memory is taken: this module's operator new. It is
// linked statically with llama.cpp's common library and its symbols are not exported
// (--exclude-libs), so these definitions serve only code inside _bf_ffi, and they cost one
// thread-local load per allocation. While a render_budget is alive on a thread, the bytes that
// thread holds through operator new (net of what it frees) may not pass the budget's limit: the
// allocation that would throws render_budget_exceeded (a std::bad_alloc whose message carries
// the guard's marker, so Python reports it like the loop-step budget). Outside a render nothing
// is counted.
// ---------------------------------------------------------------------------------------------
namespace {

struct render_budget_state {
    int64_t held = 0;   // bytes allocated minus bytes freed while the budget is active
    int64_t limit = 0;
    bool exceeded = false;  // once: later large allocations fail at once (a load renders ~30 times)
};

thread_local render_budget_state * t_render_budget = nullptr;
constexpr size_t k_large_allocation = 1 << 20;

class render_budget_exceeded : public std::bad_alloc {
  public:
    explicit render_budget_exceeded(int64_t limit) {
        std::snprintf(msg_, sizeof(msg_), "chat template budget exceeded: the render needs more than %lld MiB",
                      (long long) (limit >> 20));
    }
    const char * what() const noexcept override { return msg_; }

  private:
    char msg_[96];  // no allocation while the budget is spent
};

size_t usable_size(void * p) {
#if defined(__GLIBC__)
    return malloc_usable_size(p);
#else
    (void) p;
    return 0;
#endif
}

void * budgeted_alloc(size_t n) {
    render_budget_state * budget = t_render_budget;
    if (budget && (budget->held + (int64_t) n > budget->limit || (budget->exceeded && n >= k_large_allocation))) {
        // small allocations go on: the unwinding (and llama.cpp's error message on the way
        // out, built in handlers some of which are noexcept) must still be able to allocate
        budget->exceeded = true;
        throw render_budget_exceeded(budget->limit);
    }
    void * p = std::malloc(n ? n : 1);
    if (!p) {
        throw std::bad_alloc();
    }
    if (budget) {
        budget->held += (int64_t) usable_size(p);
    }
    return p;
}

void budgeted_free(void * p) noexcept {
    if (!p) {
        return;
    }
    if (render_budget_state * budget = t_render_budget) {
        budget->held -= (int64_t) usable_size(p);
    }
    std::free(p);
}

// Active for its lifetime on the constructing thread; renders do not nest.
class render_budget {
  public:
    explicit render_budget(size_t input_bytes) {
        state_.limit = k_base + (int64_t) input_bytes * k_per_input_byte;
        t_render_budget = &state_;
    }
    ~render_budget() { t_render_budget = nullptr; }
    render_budget(const render_budget &) = delete;
    render_budget & operator=(const render_budget &) = delete;

  private:
    // what a render may hold at once: real templates over a long conversation hold a few
    // copies of it (messages as JSON, as Jinja values, the prompt); a bomb asks for gigabytes
    static constexpr int64_t k_base = 256LL << 20;
    static constexpr int64_t k_per_input_byte = 32;
    render_budget_state state_;
};

}  // namespace

// Replaceable allocation functions (the aligned forms stay libstdc++'s: they pair among
// themselves and templates never use them). Everything here is malloc/free, as libstdc++'s own.
void * operator new(size_t n) { return budgeted_alloc(n); }
void * operator new[](size_t n) { return budgeted_alloc(n); }
void * operator new(size_t n, const std::nothrow_t &) noexcept {
    try {
        return budgeted_alloc(n);
    } catch (...) {
        return nullptr;
    }
}
void * operator new[](size_t n, const std::nothrow_t &) noexcept {
    try {
        return budgeted_alloc(n);
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void * p) noexcept { budgeted_free(p); }
void operator delete[](void * p) noexcept { budgeted_free(p); }
void operator delete(void * p, size_t) noexcept { budgeted_free(p); }
void operator delete[](void * p, size_t) noexcept { budgeted_free(p); }
void operator delete(void * p, const std::nothrow_t &) noexcept { budgeted_free(p); }
void operator delete[](void * p, const std::nothrow_t &) noexcept { budgeted_free(p); }

#ifndef BF_COMPILER
#define BF_COMPILER "unknown"
#endif
#ifndef BF_AMX_WORKAROUND
#define BF_AMX_WORKAROUND 0
#endif
#ifndef BF_LLAMA_PIN
#define BF_LLAMA_PIN "unknown"
#endif
#ifndef BF_GGML_FLAGS
#define BF_GGML_FLAGS ""
#endif

namespace {

int g_min_log_level = GGML_LOG_LEVEL_WARN;

void log_to_stderr(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    // CONT lines continue the previous message: keep them only if we keep everything.
    if (level == GGML_LOG_LEVEL_CONT ? g_min_log_level > GGML_LOG_LEVEL_DEBUG : (int) level < g_min_log_level) {
        return;
    }
    fputs(text, stderr);
}

char * dup_string(const std::string & s) {
    char * out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out) {
        std::memcpy(out, s.data(), s.size() + 1);
    }
    return out;
}

char * error_json(const std::string & message) {
    return dup_string(ojson{{"error", message}}.dump(-1, ' ', false, ojson::error_handler_t::replace));
}

char * ok_json(const ojson & value) {
    return dup_string(value.dump(-1, ' ', false, ojson::error_handler_t::replace));
}

struct bf_templates {
    common_chat_templates_ptr tmpls;
    std::string caps_json;  // capabilities of the template used when tools are given
};

// The Jinja capabilities (tools, tool calls, system role, ...) of the template that
// common_chat_templates_apply renders tool requests with: the tool_use variant if any.
std::string template_caps_json(const common_chat_templates * tmpls) {
    std::string src = common_chat_templates_source(tmpls, "tool_use");
    if (src.empty()) {
        src = common_chat_templates_source(tmpls);
    }
    ojson caps;
    try {
        common_chat_template tmpl(src, "", "");
        for (const auto & [key, value] : tmpl.original_caps().to_map()) {
            caps[key] = value;
        }
    } catch (const std::exception &) {
        caps["supports_tools"] = false;  // cannot be probed: treat it as knowing no tools
        caps["supports_tool_calls"] = false;
    }
    return ojson{{"caps", caps}}.dump();
}

// The devices a model's offloaded layers go to, in llama.cpp's own default order: one or more
// devices per RPC server in `rpc_servers` ("host:port,host:port") first (fewest network
// transfers), then this build's discrete GPUs, or its integrated ones when it has none
// (llama_model_load's rule). RPC servers are not added to ggml's global registry: a model
// without them never offloads to them, and gets llama.cpp's own choice (bf_model_load passes
// no list then; this one is what placement reports).
std::vector<ggml_backend_dev_t> model_devices(const char * rpc_servers) {
    std::vector<ggml_backend_dev_t> gpus, igpus;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU) {
            gpus.push_back(dev);
        } else if (type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            igpus.push_back(dev);
        }
    }
    std::vector<ggml_backend_dev_t> local = gpus.empty() ? igpus : gpus;
    if (rpc_servers == nullptr || *rpc_servers == '\0') {
        return local;
    }
    std::vector<ggml_backend_dev_t> devs;
    ggml_backend_reg_t rpc_reg = ggml_backend_reg_by_name("RPC");
    if (rpc_reg == nullptr) {
        throw std::runtime_error("this build has no RPC backend (reinstall with CMAKE_ARGS=\"-DGGML_RPC=ON\")");
    }
    typedef ggml_backend_reg_t (*add_server_t)(const char * endpoint);
    auto add_server = (add_server_t) ggml_backend_reg_get_proc_address(rpc_reg, "ggml_backend_rpc_add_server");
    if (add_server == nullptr) {
        throw std::runtime_error("the RPC backend has no ggml_backend_rpc_add_server");
    }
    std::stringstream list(rpc_servers);
    std::string endpoint;
    while (std::getline(list, endpoint, ',')) {
        if (endpoint.empty()) {
            continue;
        }
        ggml_backend_reg_t reg = add_server(endpoint.c_str());
        if (reg == nullptr || ggml_backend_reg_dev_count(reg) == 0) {
            throw std::runtime_error("RPC server " + endpoint + " did not answer (is `botframework rpc-server` "
                                     "running there, of the same version?)");
        }
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) {
            devs.push_back(ggml_backend_reg_dev_get(reg, i));
        }
    }
    devs.insert(devs.end(), local.begin(), local.end());
    return devs;
}

ojson device_json(ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    const char * kind = "cpu";
    switch (ggml_backend_dev_type(dev)) {
        case GGML_BACKEND_DEVICE_TYPE_GPU:   kind = "gpu"; break;
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  kind = "igpu"; break;
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: kind = "accel"; break;
        default: break;
    }
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    return {{"name", ggml_backend_dev_name(dev)}, {"description", ggml_backend_dev_description(dev)},
            {"kind", kind}, {"backend", reg ? ggml_backend_reg_name(reg) : ""},
            {"free_bytes", free}, {"total_bytes", total}};
}

std::mutex g_fit_mutex;  // common_fit_params swaps llama's global logger while it measures

}  // namespace

extern "C" {

void bf_log_set_level(int min_level) {
    g_min_log_level = min_level;
    llama_log_set(log_to_stderr, nullptr);
}

const char * bf_build_info(void) {
    static std::string info = [] {
        ojson j;
        j["compiler"] = BF_COMPILER;
        j["amx_dse_workaround"] = BF_AMX_WORKAROUND != 0;
        j["llama_cpp"] = BF_LLAMA_PIN;
        j["ggml_flags"] = BF_GGML_FLAGS;
        j["system_info"] = llama_print_system_info();
        ojson cpu;
        cpu["sse3"] = ggml_cpu_has_sse3() != 0;
        cpu["ssse3"] = ggml_cpu_has_ssse3() != 0;
        cpu["avx"] = ggml_cpu_has_avx() != 0;
        cpu["avx2"] = ggml_cpu_has_avx2() != 0;
        cpu["f16c"] = ggml_cpu_has_f16c() != 0;
        cpu["fma"] = ggml_cpu_has_fma() != 0;
        cpu["avx_vnni"] = ggml_cpu_has_avx_vnni() != 0;
        cpu["avx512"] = ggml_cpu_has_avx512() != 0;
        cpu["avx512_vbmi"] = ggml_cpu_has_avx512_vbmi() != 0;
        cpu["avx512_vnni"] = ggml_cpu_has_avx512_vnni() != 0;
        cpu["avx512_bf16"] = ggml_cpu_has_avx512_bf16() != 0;
        cpu["amx_int8"] = ggml_cpu_has_amx_int8() != 0;
        cpu["neon"] = ggml_cpu_has_neon() != 0;
        cpu["arm_fma"] = ggml_cpu_has_arm_fma() != 0;
        cpu["sve"] = ggml_cpu_has_sve() != 0;
        j["cpu_features"] = cpu;
        ojson devices = ojson::array();
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            devices.push_back({{"name", ggml_backend_dev_name(dev)},
                               {"description", ggml_backend_dev_description(dev)}});
        }
        j["devices"] = devices;
        return j.dump();
    }();
    return info.c_str();
}

int bf_selftest_quantized(char * report, size_t report_size) {
    std::string out;
    int failures = 0;
    try {
        const int64_t K = 256, N = 64, M = 32;  // weights N x K, batch M x K: multi-row kernels
        ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        ggml_backend_t backend = ggml_backend_dev_init(dev, nullptr);
        if (!backend) {
            throw std::runtime_error("cannot init the CPU backend");
        }
        ggml_backend_cpu_set_n_threads(backend, 1);
        std::vector<ggml_backend_buffer_type_t> bufts;
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
        auto get_extra = (ggml_backend_dev_get_extra_bufts_t)
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
        if (get_extra) {
            for (ggml_backend_buffer_type_t * p = get_extra(dev); p && *p; ++p) {
                bufts.push_back(*p);
            }
        }
        bufts.push_back(ggml_backend_dev_buffer_type(dev));

        std::mt19937 rng(42);
        std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
        std::vector<float> wf(N * K), xf(M * K);
        for (auto & v : wf) v = uni(rng);
        for (auto & v : xf) v = uni(rng);

        for (ggml_type qtype : {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0}) {
            std::vector<uint8_t> q(ggml_row_size(qtype, K) * N);
            ggml_quantize_chunk(qtype, wf.data(), q.data(), 0, N, K, nullptr);
            std::vector<float> wdq(N * K);
            ggml_get_type_traits(qtype)->to_float(q.data(), wdq.data(), N * K);
            std::vector<float> ref(M * N, 0.0f);
            float ref_max = 0.0f;
            for (int64_t m = 0; m < M; ++m) {
                for (int64_t n = 0; n < N; ++n) {
                    double acc = 0.0;
                    for (int64_t k = 0; k < K; ++k) acc += (double) wdq[n * K + k] * xf[m * K + k];
                    ref[m * N + n] = (float) acc;
                    ref_max = std::max(ref_max, std::fabs((float) acc));
                }
            }
            for (ggml_backend_buffer_type_t buft : bufts) {
                ggml_init_params wp = {ggml_tensor_overhead() * 2, nullptr, true};
                ggml_context * ctx_w = ggml_init(wp);
                ggml_tensor * w = ggml_new_tensor_2d(ctx_w, qtype, K, N);
                ggml_init_params cp = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
                ggml_context * ctx_c = ggml_init(cp);
                ggml_tensor * x = ggml_new_tensor_2d(ctx_c, GGML_TYPE_F32, K, M);
                ggml_tensor * y = ggml_mul_mat(ctx_c, w, x);
                std::string name = std::string(ggml_backend_buft_name(buft)) + "/" + ggml_type_name(qtype);
                // An extra buffer type that cannot run this op is skipped, as llama.cpp does.
                ggml_backend_dev_t buft_dev = ggml_backend_buft_get_device(buft);
                bool usable = true;
                if (buft_dev && buft != ggml_backend_dev_buffer_type(dev)) {
                    ggml_backend_buffer_t probe = ggml_backend_buft_alloc_buffer(buft, 0);
                    w->buffer = probe;
                    usable = ggml_backend_dev_supports_op(dev, y);
                    w->buffer = nullptr;
                    ggml_backend_buffer_free(probe);
                }
                if (!usable) {
                    out += name + ": not used for this type\n";
                    ggml_free(ctx_c);
                    ggml_free(ctx_w);
                    continue;
                }
                ggml_backend_buffer_t buf_w = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft);
                ggml_backend_tensor_set(w, q.data(), 0, q.size());
                ggml_cgraph * gf = ggml_new_graph(ctx_c);
                ggml_build_forward_expand(gf, y);
                ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
                ggml_gallocr_alloc_graph(galloc, gf);
                ggml_backend_tensor_set(x, xf.data(), 0, xf.size() * sizeof(float));
                ggml_status status = ggml_backend_graph_compute(backend, gf);
                std::vector<float> got(M * N);
                ggml_backend_tensor_get(y, got.data(), 0, got.size() * sizeof(float));
                float max_err = 0.0f;
                for (size_t i = 0; i < got.size(); ++i) {
                    float e = std::fabs(got[i] - ref[i]);
                    max_err = std::isfinite(e) ? std::max(max_err, e) : INFINITY;
                }
                // Activations are quantized to 8 bits inside the kernels: a few percent is normal,
                // garbage tile configs give errors of the order of the values themselves.
                bool ok = status == GGML_STATUS_SUCCESS && max_err <= 0.05f * ref_max + 1e-3f;
                failures += ok ? 0 : 1;
                char line[256];
                snprintf(line, sizeof line, "%s: %s (max error %.4g, scale %.4g)\n", name.c_str(),
                         ok ? "ok" : "FAILED", max_err, ref_max);
                out += line;
                ggml_gallocr_free(galloc);
                ggml_backend_buffer_free(buf_w);
                ggml_free(ctx_c);
                ggml_free(ctx_w);
            }
        }
        ggml_backend_free(backend);
    } catch (const std::exception & e) {
        out += std::string("error: ") + e.what() + "\n";
        failures += 1;
    }
    if (report && report_size > 0) {
        snprintf(report, report_size, "%s", out.c_str());
    }
    return failures;
}

// First index of the largest value, like numpy's argmax and llama.cpp's greedy sampler. The
// maximum of each block is a vector reduction; only the first block holding the overall
// maximum is searched element by element. NaN never compares greater: without a finite
// maximum the answer is 0.
static int32_t bf_argmax(const float * x, int32_t n) {
    constexpr int32_t block = 1024;
    float best = -INFINITY;
    int32_t best_block = 0;
    for (int32_t b = 0; b < n; b += block) {
        const int32_t e = std::min(n, b + block);
        float m = -INFINITY;
#pragma omp simd reduction(max : m)
        for (int32_t i = b; i < e; ++i) {
            m = x[i] > m ? x[i] : m;
        }
        if (m > best) {
            best = m;
            best_block = b;
        }
    }
    const int32_t e = std::min(n, best_block + block);
    for (int32_t i = best_block; i < e; ++i) {
        if (x[i] == best) {
            return i;
        }
    }
    return 0;
}

static void bf_fill(const float * logits, struct llama_sampler * pre, llama_token_data * cand, int32_t n_vocab) {
    for (int32_t i = 0; i < n_vocab; ++i) {
        cand[i].id = i;
        cand[i].logit = logits[i];
        cand[i].p = 0.0f;
    }
    if (pre != nullptr) {
        llama_token_data_array arr = {cand, (size_t) n_vocab, -1, false};
        llama_sampler_apply(pre, &arr);  // in place, same order: logits only
    }
}

int32_t bf_fill_candidates(struct llama_context * ctx, int32_t idx, struct llama_sampler * pre,
                           llama_token_data * cand, int32_t n_vocab, float * adjusted) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) {
        return -1;
    }
    bf_fill(logits, pre, cand, n_vocab);
    if (adjusted != nullptr) {
        for (int32_t i = 0; i < n_vocab; ++i) {
            adjusted[i] = cand[i].logit;
        }
    }
    return 0;
}

int32_t bf_sample(struct llama_context * ctx, int32_t idx, struct llama_sampler * pre,
                  struct llama_sampler * post, int greedy, llama_token_data * cand, int32_t n_vocab) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) {
        return -1;
    }
    llama_token token;
    if (greedy && pre == nullptr) {
        token = bf_argmax(logits, n_vocab);
    } else {
        bf_fill(logits, pre, cand, n_vocab);
        llama_token_data_array arr = {cand, (size_t) n_vocab, -1, false};
        llama_sampler_apply(post, &arr);
        if (arr.selected < 0 || (size_t) arr.selected >= arr.size || !std::isfinite(arr.data[arr.selected].logit)) {
            return -2;
        }
        token = arr.data[arr.selected].id;
    }
    if (pre != nullptr) {
        llama_sampler_accept(pre, token);
    }
    llama_sampler_accept(post, token);
    return token;
}

// Whether the text of `token` (control tokens' text included) has a byte whose bit is set in
// the 256-bit `bits`: the token may complete a stop string ending in that byte. A piece too
// long for the buffer counts as a yes.
static bool bf_piece_has_byte(const llama_vocab * vocab, llama_token token, const uint8_t * bits) {
    char piece[256];
    const int32_t n = llama_token_to_piece(vocab, token, piece, sizeof(piece), 0, true);
    if (n < 0) {
        return true;
    }
    for (int32_t k = 0; k < n; ++k) {
        const uint8_t b = (uint8_t) piece[k];
        if (bits[b >> 3] & (1u << (b & 7))) {
            return true;
        }
    }
    return false;
}

// Python's str.isspace() for an ASCII byte: what str.rstrip() strips
static bool bf_is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

// JSON string body of ASCII text, as Python's json.encoder.encode_basestring writes it
static void bf_json_escape(std::string & out, const char * text, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t k = 0; k < n; ++k) {
        const unsigned char c = (unsigned char) text[k];
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out += hex[c >> 4];
                    out += hex[c & 15];
                } else {
                    out += (char) c;
                }
        }
    }
}

enum bf_stream_result { BF_STREAM_TAKEN, BF_STREAM_TAKEN_STOP, BF_STREAM_NOT_TAKEN };

// The chunk for held whitespace + an ASCII piece: `text` gets pending + piece, `end` the length
// of its part that goes out now (with rstrip, trailing whitespace waits), `frame` that part as
// head + JSON string + tail (+ number + number_tail when number >= 0: an event's sequence
// number) framed as an HTTP/1.1 chunk ("" when nothing goes out). Throws
// only std::bad_alloc.
static void bf_stream_frame(const char * head, size_t head_len, const char * tail, size_t tail_len,
                            int64_t number, const char * number_tail, size_t number_tail_len,
                            const char * pending, size_t pending_len, int32_t rstrip, const char * piece, size_t n,
                            std::string & text, size_t & end, std::string & frame) {
    text.assign(pending, pending_len);
    text.append(piece, n);
    end = text.size();
    if (rstrip) {
        while (end > 0 && bf_is_space((unsigned char) text[end - 1])) {
            --end;
        }
    }
    frame.clear();
    if (end == 0) {
        return;
    }
    std::string body(head, head_len);
    body += '"';
    bf_json_escape(body, text.data(), end);
    body += '"';
    body.append(tail, tail_len);
    if (number >= 0) {
        body += std::to_string(number);
        body.append(number_tail, number_tail_len);
    }
    char size_line[24];
    const int k = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", body.size());
    frame.assign(size_line, (size_t) k);
    frame += body;
    frame += "\r\n";
}

int32_t bf_stream_format(const char * head, int32_t head_len, const char * tail, int32_t tail_len,
                         int64_t number, const char * number_tail, int32_t number_tail_len,
                         const char * pending, int32_t pending_len, int32_t rstrip, const char * piece, int32_t n,
                         char * out, int32_t cap, int32_t * held) {
    try {
        std::string text, frame;
        size_t end = 0;
        bf_stream_frame(head, (size_t) head_len, tail, (size_t) tail_len, number, number_tail,
                        (size_t) number_tail_len, pending, (size_t) pending_len, rstrip, piece, (size_t) n, text,
                        end, frame);
        if (frame.size() > (size_t) cap) {
            return -1;
        }
        std::memcpy(out, frame.data(), frame.size());
        *held = (int32_t) (text.size() - end);
        return (int32_t) frame.size();
    } catch (...) {
        return -1;
    }
}

#if (defined(__unix__) || defined(__APPLE__)) && !defined(MSG_NOSIGNAL)
#define MSG_NOSIGNAL 0  // (SIGPIPE is ignored by Python anyway)
#endif

// One token's ASCII piece of a natively streamed sequence: its chunk (bf_stream_frame) in one
// non-blocking send. TAKEN: sent whole (or held as whitespace); TAKEN_STOP: taken, but the
// stream sends no more in this run: the socket took part of the chunk (its end is in s.rest)
// or the send failed (s.error); NOT_TAKEN: the socket took nothing (s.error EAGAIN), or the
// held whitespace or the chunk's end would not fit the caller's buffers (nothing sent).
static bf_stream_result bf_stream_send(bf_run_stream & s, const char * piece, int32_t n) {
#if defined(__unix__) || defined(__APPLE__)
    try {
        std::string text, frame;
        size_t end = 0;
        bf_stream_frame(s.head, (size_t) s.head_len, s.tail, (size_t) s.tail_len, s.number, s.number_tail,
                        (size_t) s.number_tail_len, s.pending, (size_t) s.pending_len, s.rstrip, piece, (size_t) n,
                        text, end, frame);
        if (text.size() - end > (size_t) s.pending_cap || frame.size() > (size_t) s.rest_cap) {
            return BF_STREAM_NOT_TAKEN;
        }
        if (!frame.empty()) {
            ssize_t sent;
            do {
                sent = send(s.fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            } while (sent < 0 && errno == EINTR);
            if (sent <= 0) {
                const int err = sent == 0 || errno == EWOULDBLOCK ? EAGAIN : errno;
                s.error = err;
                if (err == EAGAIN) {
                    return BF_STREAM_NOT_TAKEN;
                }
            } else if ((size_t) sent < frame.size()) {
                const size_t rest = frame.size() - (size_t) sent;  // (fits: checked above)
                std::memcpy(s.rest, frame.data() + sent, rest);
                s.rest_len = (int32_t) rest;
            }
            if (s.number >= 0) {
                s.number += 1;  // this chunk is the client's (whole, in part, or lost with it)
            }
        }
        std::memcpy(s.pending, text.data() + end, text.size() - end);
        s.pending_len = (int32_t) (text.size() - end);
        s.n_sent += 1;
        return s.error != 0 || s.rest_len != 0 ? BF_STREAM_TAKEN_STOP : BF_STREAM_TAKEN;
    } catch (...) {
        return BF_STREAM_NOT_TAKEN;
    }
#else
    (void) s; (void) piece; (void) n;
    return BF_STREAM_NOT_TAKEN;
#endif
}

int32_t bf_decode_run(struct llama_context * ctx, int32_t n_seqs, const int32_t * seq_ids, int32_t * tokens,
                      int32_t * pos, struct llama_sampler ** pre, struct llama_sampler ** post, const int32_t * greedy,
                      const int32_t * stop_on_eog, const uint8_t * stop_bytes, int32_t max_steps,
                      const volatile int32_t * interrupt, llama_token_data * cand, int32_t n_vocab, int32_t * out,
                      bf_run_stream * streams, int32_t * status) {
    *status = 0;
    if (n_seqs <= 0 || max_steps <= 0) {
        return 0;
    }
    const llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));
    std::vector<llama_seq_id> ids;
    std::vector<llama_seq_id *> id_ptrs;
    std::vector<int32_t> n_seq_id;
    std::vector<int8_t> logits;
    std::vector<bool> has_stops(n_seqs > 0 ? n_seqs : 0, false);
    try {
        ids.assign(seq_ids, seq_ids + n_seqs);
        id_ptrs.resize(n_seqs);
        n_seq_id.assign(n_seqs, 1);
        logits.assign(n_seqs, 1);
    } catch (...) {  // (out of memory: nothing ran)
        *status = -1003;
        return 0;
    }
    for (int32_t i = 0; i < n_seqs; ++i) {
        id_ptrs[i] = &ids[i];
        if (stop_bytes != nullptr) {
            for (int32_t k = 0; k < 32 && !has_stops[i]; ++k) {
                has_stops[i] = stop_bytes[i * 32 + k] != 0;
            }
        }
    }
    llama_batch batch = {};
    batch.n_tokens = n_seqs;
    batch.token = tokens;  // each step decodes the tokens the step before sampled
    batch.pos = pos;
    batch.n_seq_id = n_seq_id.data();
    batch.seq_id = id_ptrs.data();
    batch.logits = logits.data();
    int32_t steps = 0;
    while (steps < max_steps) {
        const int32_t rc = llama_decode(ctx, batch);
        if (rc != 0) {
            *status = rc;
            return steps;
        }
        bool stop = false;
        for (int32_t i = 0; i < n_seqs; ++i) {
            const int32_t token = bf_sample(ctx, i, pre[i], post[i], greedy[i], cand, n_vocab);
            if (token < 0) {  // (a sequence's samplers already took the tokens before it: the step is lost)
                *status = token == -1 ? -1001 : -1002;
                return steps;
            }
            out[steps * n_seqs + i] = token;
            tokens[i] = token;
            pos[i] += 1;
            stop = stop || (stop_on_eog[i] && llama_vocab_is_eog(vocab, token)) ||
                   (has_stops[i] && bf_piece_has_byte(vocab, token, stop_bytes + i * 32));
            if (streams != nullptr && streams[i].fd >= 0 && streams[i].n_sent == steps) {
                // sent only while every token before it was: the plain text of an ASCII piece
                // with no byte in the map, within the budget, not an end of generation
                bf_run_stream & s = streams[i];
                char piece[256];
                int32_t n = steps < s.budget && !llama_vocab_is_eog(vocab, token)
                    ? llama_token_to_piece(vocab, token, piece, sizeof(piece), 0, false) : -1;
                for (int32_t k = 0; k < n; ++k) {
                    const uint8_t b = (uint8_t) piece[k];
                    if (b >= 0x80 || (stop_bytes != nullptr && (stop_bytes[i * 32 + (b >> 3)] & (1u << (b & 7))))) {
                        n = -1;
                    }
                }
                if (n < 0 || bf_stream_send(s, piece, n) != BF_STREAM_TAKEN) {
                    stop = true;  // the rest of its text goes the usual way, now
                }
            }
        }
        steps += 1;
        if (stop || *interrupt) {
            break;
        }
    }
    return steps;
}

int bf_madvise(void * addr, size_t length, int advice) {
#if defined(__unix__) || defined(__APPLE__)
    return madvise(addr, length, advice) == 0 ? 0 : errno;
#else
    (void) addr; (void) length; (void) advice;
    return ENOSYS;
#endif
}

char * bf_json_schema_to_grammar(const char * schema_json) {
    try {
        ojson in = ojson::parse(schema_json);
        if (!in.contains("schema")) {
            return error_json("missing 'schema'");
        }
        common_json schema = common_json::parse(in.at("schema").dump());
        std::string grammar = json_schema_to_grammar(schema, /*force_gbnf=*/true);
        return ok_json(ojson{{"grammar", grammar}});
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

char * bf_chat_templates_new(const struct llama_model * model, const char * template_override, void ** out_handle) {
    try {
        *out_handle = nullptr;
        if (!model && (!template_override || !*template_override)) {
            // common_chat_templates_init asserts (aborts the process) on a NULL model
            return error_json("chat templates need a model or a template override");
        }
        auto holder = std::make_unique<bf_templates>();
        {
            // loading renders the template ~30 times (capability probes)
            render_budget budget(template_override ? std::strlen(template_override) : 0);
            holder->tmpls = common_chat_templates_init(model, template_override ? template_override : "");
            if (!holder->tmpls) {
                return error_json("cannot load chat template");
            }
            holder->caps_json = template_caps_json(holder->tmpls.get());
        }
        *out_handle = holder.release();
        return nullptr;
    } catch (const std::exception & e) {
        return error_json(std::string("chat template: ") + e.what());
    } catch (...) {
        return error_json("chat template: unknown error");
    }
}

char * bf_chat_templates_caps(void * handle) {
    try {
        return dup_string(static_cast<bf_templates *>(handle)->caps_json);
    } catch (...) {
        return error_json("unknown error");
    }
}

void bf_chat_templates_free(void * handle) {
    delete static_cast<bf_templates *>(handle);
}

char * bf_chat_apply(void * handle, const char * inputs_json) {
    try {
        auto holder = static_cast<bf_templates *>(handle);
        render_budget budget(std::strlen(inputs_json));  // ends before the catch below answers
        ojson in = ojson::parse(inputs_json);
        common_chat_templates_inputs inputs;
        inputs.messages = common_chat_msgs_parse_oaicompat(common_json::parse(in.value("messages", ojson::array()).dump()));
        if (in.contains("tools") && !in.at("tools").is_null()) {
            inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(in.at("tools").dump()));
        }
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(in.value("tool_choice", std::string("auto")));
        if (in.contains("json_schema") && !in.at("json_schema").is_null()) {
            inputs.json_schema = in.at("json_schema").dump();
        }
        inputs.grammar = in.value("grammar", std::string());
        inputs.use_jinja = true;
        inputs.parallel_tool_calls = in.value("parallel_tool_calls", false);
        inputs.add_generation_prompt = in.value("add_generation_prompt", true);
        inputs.enable_thinking = in.value("enable_thinking", true);
        inputs.reasoning_format = common_reasoning_format_from_name(in.value("reasoning_format", std::string("none")));
        if (in.contains("chat_template_kwargs")) {
            for (auto & item : in.at("chat_template_kwargs").items()) {
                inputs.chat_template_kwargs[item.key()] = item.value().dump();
            }
        }
        common_chat_params params = common_chat_templates_apply(holder->tmpls.get(), inputs);
        ojson out;
        out["prompt"] = params.prompt;
        out["grammar"] = params.grammar;
        out["grammar_lazy"] = params.grammar_lazy;
        ojson triggers = ojson::array();
        for (const auto & t : params.grammar_triggers) {
            triggers.push_back({{"type", (int) t.type}, {"value", t.value}, {"token", t.token}});
        }
        out["grammar_triggers"] = triggers;
        out["preserved_tokens"] = params.preserved_tokens;
        out["additional_stops"] = params.additional_stops;
        out["format"] = (int) params.format;
        out["format_name"] = common_chat_format_name(params.format);
        out["parser"] = params.parser;
        out["generation_prompt"] = params.generation_prompt;
        out["supports_thinking"] = params.supports_thinking;
        return ok_json(out);
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

static common_chat_parser_params parser_params_from_json(const char * params_json) {
    ojson in = ojson::parse(params_json);
    common_chat_parser_params params;
    params.format = (common_chat_format) in.value("format", (int) COMMON_CHAT_FORMAT_CONTENT_ONLY);
    params.reasoning_format = common_reasoning_format_from_name(in.value("reasoning_format", std::string("none")));
    params.generation_prompt = in.value("generation_prompt", std::string());
    params.parse_tool_calls = in.value("parse_tool_calls", true);
    std::string parser = in.value("parser", std::string());
    if (!parser.empty()) {
        // A serialized PEG parser from bf_chat_apply: without it no tool call is found.
        params.parser.load(parser);
    }
    return params;
}

static char * parse_with(const char * text, int is_partial, const common_chat_parser_params & params) {
    try {
        common_chat_msg msg = common_chat_parse(text, is_partial != 0, params);
        return ok_json(ojson::parse(msg.to_json_oaicompat().dump()));
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

char * bf_chat_parse(const char * text, int is_partial, const char * params_json) {
    try {
        return parse_with(text, is_partial, parser_params_from_json(params_json));
    } catch (const std::exception & e) {
        return error_json(e.what());
    } catch (...) {
        return error_json("unknown error");
    }
}

// The same parser for every delta of a stream: loading the serialized PEG parser is most of
// a parse of a short text (~0.3 ms of ~0.45 ms per delta).
struct bf_chat_parser {
    common_chat_parser_params params;
};

bf_chat_parser * bf_chat_parser_init(const char * params_json) {
    try {
        return new bf_chat_parser{parser_params_from_json(params_json)};
    } catch (...) {
        return nullptr;
    }
}

char * bf_chat_parser_parse(const bf_chat_parser * parser, const char * text, int is_partial) {
    if (parser == nullptr) {
        return error_json("no parser");
    }
    return parse_with(text, is_partial, parser->params);
}

void bf_chat_parser_free(bf_chat_parser * parser) {
    delete parser;
}

struct llama_model * bf_model_load(const char * path, struct llama_model_params * params, const char * rpc_servers,
                                   int fit, uint32_t n_ctx, uint32_t n_seq, char ** plan) {
    *plan = nullptr;
    try {
        std::vector<ggml_backend_dev_t> devs = model_devices(rpc_servers);
        ojson placement;
        ojson devices = ojson::array();
        for (ggml_backend_dev_t dev : devs) {
            devices.push_back(device_json(dev));
        }
        placement["devices"] = devices;
        llama_model_params mparams = *params;
        std::vector<ggml_backend_dev_t> dev_list = devs;
        dev_list.push_back(nullptr);
        const bool has_rpc = rpc_servers != nullptr && *rpc_servers != '\0';
        mparams.devices = has_rpc ? dev_list.data() : nullptr;  // without RPC: llama.cpp's own selection
        // fit's outputs: live until the load below has read them
        std::vector<float> tensor_split(llama_max_devices(), 0.0f);
        std::vector<llama_model_tensor_buft_override> overrides(llama_max_tensor_buft_overrides(), {nullptr, nullptr});
        if (fit && devs.empty()) {
            mparams.n_gpu_layers = 0;
            placement["fit"] = "no GPU or RPC device: every layer on the CPU";
        } else if (fit) {
            mparams.n_gpu_layers = llama_model_default_params().n_gpu_layers;  // fit changes only defaults
            llama_context_params cparams = llama_context_default_params();
            cparams.n_ctx = n_ctx;
            cparams.n_seq_max = std::max<uint32_t>(1, n_seq);
            cparams.kv_unified = true;
            std::vector<size_t> margins(llama_max_devices(), size_t(512) << 20);  // leave 512 MiB per device
            common_params_fit_status status;
            {
                std::lock_guard<std::mutex> lock(g_fit_mutex);
                status = common_fit_params(path, &mparams, &cparams, tensor_split.data(), overrides.data(),
                                           margins.data(), n_ctx, nullptr, GGML_LOG_LEVEL_ERROR);
            }
            if (status == COMMON_PARAMS_FIT_STATUS_ERROR) {
                *plan = error_json("could not measure the model's memory for n_gpu_layers=auto (set a number)");
                return nullptr;
            }
            if (status == COMMON_PARAMS_FIT_STATUS_FAILURE) {
                mparams.n_gpu_layers = 0;  // nothing fits the free device memory: stay on the CPU
                mparams.tensor_split = nullptr;
                mparams.tensor_buft_overrides = nullptr;
                placement["fit"] = "the devices' free memory holds no layer: every layer on the CPU";
            } else {
                placement["fit"] = "fits the devices' free memory";
            }
        }
        if (mparams.tensor_split != nullptr && devs.size() > 1) {
            ojson split = ojson::array();
            for (size_t i = 0; i < devs.size(); ++i) {
                split.push_back(mparams.tensor_split[i]);
            }
            placement["tensor_split"] = split;
        }
        placement["n_gpu_layers"] = mparams.n_gpu_layers;
        llama_model * model = llama_model_load_from_file(path, mparams);
        *plan = ok_json(placement);
        return model;
    } catch (const std::exception & e) {
        *plan = error_json(e.what());
        return nullptr;
    }
}

char * bf_devices(void) {
    try {
        ojson devices = ojson::array();
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            devices.push_back(device_json(ggml_backend_dev_get(i)));
        }
        return ok_json(ojson{{"devices", devices}, {"rpc", ggml_backend_reg_by_name("RPC") != nullptr},
                             {"rpc_protocol", {RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION, RPC_PROTO_PATCH_VERSION}}});
    } catch (const std::exception & e) {
        return error_json(e.what());
    }
}

void bf_string_free(char * s) {
    std::free(s);
}

}  // extern "C"
