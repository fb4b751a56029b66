/* model_file.c — opens a GGUF file or an HF directory into one validated
 * model description (see model_file.h): hyper-parameters, canonical tensor
 * table, the HF converter transforms (hf_transform_*), and in-situ
 * quantization on a thread pool. */
#include "engine/model_file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/log.h"
#include "engine/safetensors.h"

struct model_file {
  char *path;
  char *hf_dir; /* NULL for GGUF */
  gguf_file *gguf;
  safetensors *st;
  model_hparams hp;
  model_tensor *tensors;
  size_t n, cap;
  uint32_t *hash; /* slots: index + 1 */
  size_t hash_cap;
};

/* --- quant policy ---------------------------------------------------------- */

static const struct {
  const char *name;
  model_quant q;
} quant_names[] = {
    {"none", MODEL_QUANT_NONE}, {"f32", MODEL_QUANT_F32},   {"f16", MODEL_QUANT_F16},
    {"bf16", MODEL_QUANT_BF16}, {"q8_0", MODEL_QUANT_Q8_0}, {"q6_k", MODEL_QUANT_Q6_K},
    {"q5_k", MODEL_QUANT_Q5_K}, {"q4_k", MODEL_QUANT_Q4_K}, {"q4_k_m", MODEL_QUANT_Q4_K_M}};

bool model_quant_parse(const char *s, model_quant *out) {
  for (size_t i = 0; s && i < sizeof quant_names / sizeof quant_names[0]; i++)
    if (strcasecmp(s, quant_names[i].name) == 0) {
      *out = quant_names[i].q;
      return true;
    }
  return false;
}

const char *model_quant_name(model_quant q) {
  static const char *const up[] = {"none", "F32",  "F16",  "BF16",  "Q8_0",
                                   "Q6_K", "Q5_K", "Q4_K", "Q4_K_M"};
  return (unsigned)q < sizeof up / sizeof up[0] ? up[q] : "?";
}

/* llama.cpp's use_more_bits: first and last eighth, and every third layer between. */
static bool use_more_bits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

quant_type model_quant_pick(model_quant q, const char *name, int n_dims, const int64_t *ne,
                            quant_type stored, int n_layer, bool tied) {
  if (q == MODEL_QUANT_NONE)
    return stored;
  if (stored != QUANT_F32 && stored != QUANT_F16 && stored != QUANT_BF16)
    return stored; /* already quantized: never re-quantize */
  /* 1-D tensors (norms, biases, ssm_a/dt), the DeltaNet conv and MoE routers
   * stay f32, as llama-quantize leaves them */
  if (n_dims < 2 || strstr(name, "ssm_conv1d") || ends_with(name, "ffn_gate_inp.weight"))
    return QUANT_F32;
  quant_type t;
  switch (q) {
  case MODEL_QUANT_F32:
    return QUANT_F32;
  case MODEL_QUANT_F16:
    t = QUANT_F16;
    break;
  case MODEL_QUANT_BF16:
    t = QUANT_BF16;
    break;
  case MODEL_QUANT_Q8_0:
    t = QUANT_Q8_0;
    break;
  case MODEL_QUANT_Q6_K:
    t = QUANT_Q6_K;
    break;
  case MODEL_QUANT_Q5_K:
    t = QUANT_Q5_K;
    break;
  case MODEL_QUANT_Q4_K:
    t = QUANT_Q4_K;
    break;
  default: { /* Q4_K_M */
    int layer = -1;
    sscanf(name, "blk.%d.", &layer);
    t = QUANT_Q4_K;
    if (strcmp(name, "output.weight") == 0 || (tied && strcmp(name, "token_embd.weight") == 0))
      t = QUANT_Q6_K;
    else if (strstr(name, "attn_v.weight") && layer >= 0 && use_more_bits(layer, n_layer))
      t = QUANT_Q6_K;
    else if (strstr(name, "ffn_down") && layer >= 0 && use_more_bits(layer, n_layer))
      t = QUANT_Q6_K;
    else if (strstr(name, "attn_qkv.weight"))
      t = QUANT_Q5_K;
    break;
  }
  }
  if (ne[0] % (int64_t)quant_type_block_size(t) != 0) /* llama.cpp-style fallback */
    t = ne[0] % 32 == 0 ? QUANT_Q8_0 : QUANT_F16;
  return t;
}

/* --- tensor table ------------------------------------------------------------ */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static model_tensor *find_mut(const model_file *mf, const char *name) {
  if (!mf->hash)
    return NULL;
  for (size_t s = hash_str(name) & (mf->hash_cap - 1);; s = (s + 1) & (mf->hash_cap - 1)) {
    if (!mf->hash[s])
      return NULL;
    if (strcmp(mf->tensors[mf->hash[s] - 1].name, name) == 0)
      return &mf->tensors[mf->hash[s] - 1];
  }
}

static hx_code rehash(model_file *mf) {
  size_t cap = 64;
  while (cap < 2 * mf->cap)
    cap <<= 1;
  uint32_t *h = calloc(cap, sizeof *h);
  if (!h)
    return HX_ENOMEM;
  free(mf->hash);
  mf->hash = h;
  mf->hash_cap = cap;
  for (size_t i = 0; i < mf->n; i++)
    for (size_t s = hash_str(mf->tensors[i].name) & (cap - 1);; s = (s + 1) & (cap - 1))
      if (!h[s]) {
        h[s] = (uint32_t)i + 1;
        break;
      }
  return HX_OK;
}

/* Adds a tensor (name copied); fails on a duplicate or too long name. Data
 * that is not 8-byte aligned (a GGUF with a small general.alignment, a
 * safetensors header whose length is not padded) is copied so that the
 * engine can read f32 / block fields directly. */
static hx_code add_tensor(model_file *mf, const char *name, quant_type type, int n_dims,
                          const int64_t *ne, const void *data, size_t nbytes, bool owned,
                          hx_err *err) {
  if (strlen(name) >= MODEL_NAME_MAX)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor name \"%s\" is too long", mf->path, name);
  if (find_mut(mf, name))
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" appears twice", mf->path, name);
  const void *orig = data;
  if (!owned && ((uintptr_t)data & 7) != 0) {
    void *copy = malloc(nbytes ? nbytes : 1);
    if (!copy)
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    memcpy(copy, data, nbytes);
    data = copy;
    owned = true;
  }
  if (mf->n == mf->cap) {
    size_t cap = mf->cap ? 2 * mf->cap : 256;
    model_tensor *p = realloc(mf->tensors, cap * sizeof *p);
    if (!p) {
      if (owned && data != orig)
        free((void *)data);
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    }
    mf->tensors = p;
    mf->cap = cap;
  }
  model_tensor *t = &mf->tensors[mf->n++];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->type = type;
  t->n_dims = n_dims;
  for (int d = 0; d < 4; d++)
    t->ne[d] = d < n_dims ? ne[d] : 1;
  t->data = data;
  t->nbytes = nbytes;
  t->owned = owned;
  if (2 * mf->n > mf->hash_cap || !mf->hash) { /* rehash inserts every tensor */
    if (rehash(mf)) {                          /* undo: the caller still owns its own buffer */
      mf->n--;
      if (data != orig)
        free((void *)data);
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    }
    return HX_OK;
  }
  for (size_t s = hash_str(t->name) & (mf->hash_cap - 1);; s = (s + 1) & (mf->hash_cap - 1))
    if (!mf->hash[s]) {
      mf->hash[s] = (uint32_t)(mf->n);
      break;
    }
  return HX_OK;
}

static void set_data(model_tensor *t, void *data, size_t nbytes, quant_type type) {
  if (t->owned)
    free((void *)t->data);
  t->data = data;
  t->nbytes = nbytes;
  t->type = type;
  t->owned = true;
}

static int64_t nelem(const model_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

/* Owned f32 copy of any float tensor. */
static float *to_f32(const model_tensor *t) {
  int64_t n = nelem(t);
  float *p = malloc((size_t)n * sizeof *p);
  if (p)
    quant_row_dequantize(t->type, t->data, p, n);
  return p;
}

/* --- validation against the arch's tensor list --------------------------------- */

static hx_code check_specs(model_file *mf, hx_err *err) {
  size_t n = model_tensor_specs(&mf->hp, NULL, 0);
  model_tensor_spec *specs = malloc(n * sizeof *specs);
  if (!specs)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  model_tensor_specs(&mf->hp, specs, n);
  hx_code rc = HX_OK;
  for (size_t i = 0; i < n && !rc; i++) {
    model_tensor *t = find_mut(mf, specs[i].name);
    if (!t) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" is missing (arch %s)", mf->path,
                      specs[i].name, model_arch_name(mf->hp.arch));
      break;
    }
    /* ggml semantics: the shape is ne with trailing 1s, whatever n_dims says
     * (llama.cpp's converter writes ffn_gate_inp_shexp as [n_embd, 1], ours
     * as [n_embd]); the arch's own rank is kept. */
    bool same = true;
    for (int d = 0; d < 4 && same; d++)
      same = t->ne[d] == specs[i].ne[d];
    if (same)
      t->n_dims = specs[i].n_dims;
    if (!same)
      rc = hx_err_set(err, HX_EFORMAT,
                      "%s: tensor \"%s\" has shape [%lld, %lld, %lld], expected [%lld, %lld, "
                      "%lld] for these hyper-parameters",
                      mf->path, t->name, (long long)t->ne[0], (long long)t->ne[1],
                      (long long)t->ne[2], (long long)specs[i].ne[0], (long long)specs[i].ne[1],
                      (long long)specs[i].ne[2]);
    else if (!quant_type_can_dequantize(t->type) && t->type != QUANT_Q8_K &&
             !quant_type_is_valid(t->type))
      rc = hx_err_set(err, HX_EUNSUPPORTED, "%s: tensor \"%s\" has unsupported type %s", mf->path,
                      t->name, quant_type_name(t->type));
  }
  free(specs);
  return rc;
}

/* --- in-situ quantization ------------------------------------------------------ */

typedef struct {
  const model_tensor *src;
  quant_type to;
  uint8_t *dst;
  size_t dst_row_bytes, src_row_bytes;
  int64_t rows, rows_per_task;
  bool fast;
  _Atomic int failed;
} quant_job;

static void quant_task(void *ctx, size_t task, int worker) {
  (void)worker;
  quant_job *j = ctx;
  int64_t r0 = (int64_t)task * j->rows_per_task;
  int64_t r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
  int64_t ne0 = j->src->ne[0];
  float *tmp = malloc((size_t)ne0 * sizeof *tmp);
  if (!tmp) {
    j->failed = 1;
    return;
  }
  const uint8_t *src = j->src->data;
  for (int64_t r = r0; r < r1; r++) {
    quant_row_dequantize(j->src->type, src + (size_t)r * j->src_row_bytes, tmp, ne0);
    if (j->fast)
      quant_row_quantize_fast(j->to, tmp, j->dst + (size_t)r * j->dst_row_bytes, ne0);
    else
      quant_row_quantize(j->to, tmp, j->dst + (size_t)r * j->dst_row_bytes, ne0);
  }
  free(tmp);
}

static hx_code quantize_tensor(model_file *mf, model_tensor *t, quant_type to,
                               const model_file_opts *o, hx_err *err) {
  quant_job j = {.src = t, .to = to, .fast = o->fast_quant};
  j.rows = nelem(t) / t->ne[0];
  size_t total;
  if (!quant_row_bytes(to, t->ne[0], &j.dst_row_bytes) ||
      !quant_row_bytes(t->type, t->ne[0], &j.src_row_bytes) ||
      hx_size_mul(j.dst_row_bytes, (size_t)j.rows, &total))
    return hx_err_set(err, HX_EINTERNAL, "%s: tensor \"%s\": cannot quantize to %s", mf->path,
                      t->name, quant_type_name(to));
  j.dst = malloc(total ? total : 1);
  if (!j.dst)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory quantizing \"%s\"", mf->path, t->name);
  j.rows_per_task = j.rows < 64 ? 1 : 16;
  size_t n_tasks = (size_t)((j.rows + j.rows_per_task - 1) / j.rows_per_task);
  if (o->pool)
    hx_pool_parallel_for(o->pool, n_tasks, quant_task, &j);
  else
    for (size_t i = 0; i < n_tasks; i++)
      quant_task(&j, i, 0);
  if (j.failed) {
    free(j.dst);
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory quantizing \"%s\"", mf->path, t->name);
  }
  set_data(t, j.dst, total, to);
  return HX_OK;
}

static hx_code quantize_all(model_file *mf, const model_file_opts *o, hx_err *err) {
  if (o->quant == MODEL_QUANT_NONE)
    return HX_OK;
  for (size_t i = 0; i < mf->n; i++) {
    model_tensor *t = &mf->tensors[i];
    quant_type to = model_quant_pick(o->quant, t->name, t->n_dims, t->ne, t->type, mf->hp.n_layer,
                                     mf->hp.tied_embeddings);
    if (to == t->type)
      continue;
    hx_code rc = quantize_tensor(mf, t, to, o, err);
    if (rc)
      return rc;
  }
  return HX_OK;
}

/* --- GGUF ---------------------------------------------------------------------- */

/* llama.cpp also accepts a fused blk.N.ffn_gate_up_exps {n_embd, 2F, X}
 * (per expert: F gate rows, then F up rows). The canonical layout is split,
 * so it is copied into owned ffn_gate_exps / ffn_up_exps (the mapping of the
 * fused tensor is then never read again). */
static hx_code split_gate_up_exps(model_file *mf, hx_err *err) {
  for (int l = 0; l < mf->hp.n_layer; l++) {
    char name[MODEL_NAME_MAX], gname[MODEL_NAME_MAX], uname[MODEL_NAME_MAX];
    snprintf(name, sizeof name, "blk.%d.ffn_gate_up_exps.weight", l);
    snprintf(gname, sizeof gname, "blk.%d.ffn_gate_exps.weight", l);
    snprintf(uname, sizeof uname, "blk.%d.ffn_up_exps.weight", l);
    const model_tensor *f = find_mut(mf, name);
    if (!f || find_mut(mf, gname) || find_mut(mf, uname))
      continue;
    size_t rb;
    if (f->n_dims != 3 || f->ne[1] % 2 || !quant_row_bytes(f->type, f->ne[0], &rb))
      return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" has an unexpected shape", mf->path,
                        name);
    int64_t F = f->ne[1] / 2, X = f->ne[2];
    size_t half = rb * (size_t)F, total = half * (size_t)X;
    uint8_t *g = malloc(total), *u = malloc(total);
    if (!g || !u) {
      free(g);
      free(u);
      return hx_err_set(err, HX_ENOMEM, "out of memory");
    }
    const uint8_t *src = f->data;
    for (int64_t x = 0; x < X; x++) {
      memcpy(g + (size_t)x * half, src + 2 * (size_t)x * half, half);
      memcpy(u + (size_t)x * half, src + (2 * (size_t)x + 1) * half, half);
    }
    int64_t ne[3] = {f->ne[0], F, X};
    quant_type ty = f->type;
    hx_code rc = add_tensor(mf, gname, ty, 3, ne, g, total, true, err);
    if (rc) {
      free(g);
      free(u);
      return rc;
    }
    if ((rc = add_tensor(mf, uname, ty, 3, ne, u, total, true, err))) {
      free(u);
      return rc;
    }
  }
  return HX_OK;
}

static hx_code open_gguf(model_file *mf, hx_err *err) {
  hx_code rc = gguf_open(mf->path, &mf->gguf, err);
  if (rc || (rc = model_hparams_from_gguf(mf->gguf, &mf->hp, err)))
    return rc;
  for (size_t i = 0; i < gguf_tensor_count(mf->gguf); i++) {
    const gguf_tensor *g = gguf_tensor_at(mf->gguf, i);
    if ((rc = add_tensor(mf, g->name, g->type, g->n_dims, g->ne, g->data, g->nbytes, false, err)))
      return rc;
  }
  return model_arch_is_moe(mf->hp.arch) ? split_gate_up_exps(mf, err) : HX_OK;
}

/* --- HF directory ------------------------------------------------------------ */

static hx_code st_type(const model_file *mf, const st_tensor *s, quant_type *out, hx_err *err) {
  switch (s->dtype) {
  case ST_F32:
    *out = QUANT_F32;
    return HX_OK;
  case ST_F16:
    *out = QUANT_F16;
    return HX_OK;
  case ST_BF16:
    *out = QUANT_BF16;
    return HX_OK;
  default:
    return hx_err_set(err, HX_EUNSUPPORTED,
                      "%s: tensor \"%s\" has dtype %s (only F32/F16/BF16 "
                      "checkpoints are supported)",
                      mf->path, s->name, st_dtype_name(s->dtype));
  }
}

/* GGUF order (reversed), size-1 dims squeezed (conv1d [C,1,K] -> {K, C}). */
static int st_ne(const st_tensor *s, int64_t ne[4]) {
  int n = 0;
  for (int d = s->n_dims - 1; d >= 0; d--)
    if (s->shape[d] != 1 && n < 4)
      ne[n++] = s->shape[d];
  if (n == 0)
    ne[n++] = 1;
  for (int d = n; d < 4; d++)
    ne[d] = 1;
  return n;
}

static hx_code add_st(model_file *mf, const char *name, const st_tensor *s, hx_err *err) {
  quant_type t;
  hx_code rc = st_type(mf, s, &t, err);
  if (rc)
    return rc;
  int64_t ne[4];
  int nd = st_ne(s, ne);
  if (s->n_dims > 4 && nd > 4)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" has more than 4 dims", mf->path, s->name);
  return add_tensor(mf, name, t, nd, ne, s->data, s->nbytes, false, err);
}

/* Gathers rows: dst row i = src row map(i). */
typedef int64_t (*row_map_fn)(int64_t i, const int64_t *p);

/* qwen35: V head slot s_new (tiled) <- s_old (grouped by K head). p = {nk, r}. */
static int64_t v_tiled_from_grouped(int64_t s_new, const int64_t *p) {
  int64_t nk = p[0], r = p[1];
  return (s_new % nk) * r + s_new / nk;
}

/* Reorders `n_slots` groups of `rows_per_slot` rows starting at row `first`. */
static hx_code reorder_row_slots(model_tensor *t, int64_t first, int64_t n_slots,
                                 int64_t rows_per_slot, const int64_t *p, hx_err *err) {
  size_t row_bytes;
  HX_ASSERT(quant_row_bytes(t->type, t->ne[0], &row_bytes));
  uint8_t *dst = malloc(t->nbytes);
  if (!dst)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  memcpy(dst, t->data, t->nbytes);
  const uint8_t *src = t->data;
  size_t slot_bytes = row_bytes * (size_t)rows_per_slot;
  for (int64_t s = 0; s < n_slots; s++)
    memcpy(dst + (size_t)first * row_bytes + (size_t)s * slot_bytes,
           src + (size_t)first * row_bytes + (size_t)v_tiled_from_grouped(s, p) * slot_bytes,
           slot_bytes);
  set_data(t, dst, t->nbytes, t->type);
  return HX_OK;
}

/* ssm_out: reorder the columns (input features) in slots of hd. */
static hx_code reorder_cols(model_tensor *t, int64_t n_slots, int64_t hd, const int64_t *p,
                            hx_err *err) {
  size_t es = quant_type_block_bytes(t->type); /* float types only: block size 1 */
  HX_ASSERT(quant_type_block_size(t->type) == 1);
  uint8_t *dst = malloc(t->nbytes);
  if (!dst)
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  const uint8_t *src = t->data;
  int64_t rows = nelem(t) / t->ne[0];
  size_t rb = (size_t)t->ne[0] * es, sb = (size_t)hd * es;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t s = 0; s < n_slots; s++)
      memcpy(dst + (size_t)r * rb + (size_t)s * sb,
             src + (size_t)r * rb + (size_t)v_tiled_from_grouped(s, p) * sb, sb);
  set_data(t, dst, t->nbytes, t->type);
  return HX_OK;
}

/* The HF -> GGUF value transforms (convert_hf_to_gguf.py Qwen3NextModel and
 * _LinearAttentionVReorderBase), applied once after all tensors are in. */
static hx_code hf_transform_values(model_file *mf, hx_err *err) {
  const model_hparams *hp = &mf->hp;
  if (!model_arch_is_hybrid(hp->arch))
    return HX_OK;
  int64_t nk = hp->ssm_n_group, nv = hp->ssm_dt_rank, dk = hp->ssm_d_state, dv = hp->ssm_head_v_dim;
  int64_t p[2] = {nk, nk ? nv / nk : 1};
  bool reorder = (hp->arch == MODEL_ARCH_QWEN35 || hp->arch == MODEL_ARCH_QWEN35MOE) && nk != nv;
  for (size_t i = 0; i < mf->n; i++) {
    model_tensor *t = &mf->tensors[i];
    hx_code rc = HX_OK;
    bool is_norm = ends_with(t->name, "norm.weight") && !ends_with(t->name, "ssm_norm.weight");
    if (is_norm || ends_with(t->name, ".ssm_a") || ends_with(t->name, "ssm_dt.bias")) {
      float *x = to_f32(t);
      if (!x)
        return hx_err_set(err, HX_ENOMEM, "out of memory");
      int64_t n = nelem(t);
      if (reorder && !is_norm) { /* per-V-head vectors */
        float *y = malloc((size_t)n * sizeof *y);
        if (!y) {
          free(x);
          return hx_err_set(err, HX_ENOMEM, "out of memory");
        }
        for (int64_t s = 0; s < n; s++)
          y[s] = x[v_tiled_from_grouped(s, p)];
        free(x);
        x = y;
      }
      for (int64_t k = 0; k < n; k++)
        x[k] = is_norm ? x[k] + 1.0f : ends_with(t->name, ".ssm_a") ? -expf(x[k]) : x[k];
      set_data(t, x, (size_t)n * sizeof *x, QUANT_F32);
      continue;
    }
    if (!reorder)
      continue;
    if (ends_with(t->name, "attn_qkv.weight") || ends_with(t->name, "ssm_conv1d.weight"))
      rc = reorder_row_slots(t, 2 * nk * dk, nv, dv, p, err);
    else if (ends_with(t->name, "attn_gate.weight"))
      rc = reorder_row_slots(t, 0, nv, dv, p, err);
    else if (ends_with(t->name, "ssm_alpha.weight") || ends_with(t->name, "ssm_beta.weight"))
      rc = reorder_row_slots(t, 0, nv, 1, p, err);
    else if (ends_with(t->name, "ssm_out.weight"))
      rc = reorder_cols(t, nv, dv, p, err);
    if (rc)
      return rc;
  }
  return HX_OK;
}

/* qwen3next in_proj_qkvz: rows grouped per K head [q dk | k dk | v r*dv | z r*dv]
 * -> attn_qkv [all q | all k | all v] and attn_gate [all z]. */
static hx_code hf_split_qkvz(model_file *mf, int layer, const st_tensor *s, hx_err *err) {
  const model_hparams *hp = &mf->hp;
  quant_type ty;
  hx_code rc = st_type(mf, s, &ty, err);
  if (rc)
    return rc;
  int64_t nk = hp->ssm_n_group, dk = hp->ssm_d_state, vr = hp->ssm_d_inner / (nk ? nk : 1);
  int64_t per = 2 * dk + 2 * vr, E = hp->n_embd;
  if (s->n_dims != 2 || s->shape[1] != E || s->shape[0] != nk * per)
    return hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" has an unexpected shape", mf->path,
                      s->name);
  size_t rb = (size_t)E * quant_type_block_bytes(ty);
  int64_t qkv_rows = nk * (2 * dk + vr), z_rows = nk * vr;
  uint8_t *qkv = malloc(rb * (size_t)qkv_rows), *z = malloc(rb * (size_t)z_rows);
  if (!qkv || !z) {
    free(qkv);
    free(z);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  const uint8_t *src = s->data;
  for (int64_t h = 0; h < nk; h++) {
    const uint8_t *g = src + (size_t)(h * per) * rb;
    memcpy(qkv + (size_t)(h * dk) * rb, g, (size_t)dk * rb);
    memcpy(qkv + (size_t)(nk * dk + h * dk) * rb, g + (size_t)dk * rb, (size_t)dk * rb);
    memcpy(qkv + (size_t)(2 * nk * dk + h * vr) * rb, g + (size_t)(2 * dk) * rb, (size_t)vr * rb);
    memcpy(z + (size_t)(h * vr) * rb, g + (size_t)(2 * dk + vr) * rb, (size_t)vr * rb);
  }
  char name[MODEL_NAME_MAX];
  int64_t ne_qkv[2] = {E, qkv_rows}, ne_z[2] = {E, z_rows};
  snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", layer);
  if ((rc = add_tensor(mf, name, ty, 2, ne_qkv, qkv, rb * (size_t)qkv_rows, true, err))) {
    free(qkv);
    free(z);
    return rc;
  }
  snprintf(name, sizeof name, "blk.%d.attn_gate.weight", layer);
  if ((rc = add_tensor(mf, name, ty, 2, ne_z, z, rb * (size_t)z_rows, true, err)))
    free(z);
  return rc;
}

/* MoE experts into 3-D *_exps: per-expert tensors, or fused gate_up_proj /
 * down_proj ([X, 2F, E] / [X, E, F]). */
static hx_code hf_stack_experts(model_file *mf, const char *prefix, hx_err *err) {
  const model_hparams *hp = &mf->hp;
  int64_t X = hp->n_expert, F = hp->n_ff_exp, E = hp->n_embd;
  static const char *const proj[3] = {"gate", "up", "down"};
  char hf[256], name[MODEL_NAME_MAX];
  for (int l = 0; l < hp->n_layer; l++) {
    if (hp->layer_dense_ffn[l])
      continue; /* mlp_only_layers / decoder_sparse_step: a dense MLP, no experts */
    snprintf(hf, sizeof hf, "%slayers.%d.mlp.experts.gate_up_proj", prefix, l);
    const st_tensor *fused = safetensors_find(mf->st, hf);
    for (int pi = 0; pi < 3; pi++) {
      int64_t rows = pi == 2 ? E : F, cols = pi == 2 ? F : E;
      int64_t ne[3] = {cols, rows, X};
      snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", l, proj[pi]);
      quant_type ty = QUANT_F32;
      size_t eb = 0;
      uint8_t *buf = NULL;
      hx_code rc = HX_OK;
      if (fused && pi < 2) {
        if ((rc = st_type(mf, fused, &ty, err)))
          return rc;
        eb = quant_type_block_bytes(ty);
        if (fused->n_dims != 3 || fused->shape[0] != X || fused->shape[1] != 2 * F ||
            fused->shape[2] != E)
          return hx_err_set(err, HX_EFORMAT, "%s: \"%s\" has an unexpected shape", mf->path, hf);
        size_t part = (size_t)(F * E) * eb;
        buf = malloc(part * (size_t)X);
        if (!buf)
          return hx_err_set(err, HX_ENOMEM, "out of memory");
        for (int64_t x = 0; x < X; x++)
          memcpy(buf + (size_t)x * part, (const uint8_t *)fused->data + (2 * (size_t)x + pi) * part,
                 part);
      } else if (fused) {
        snprintf(hf, sizeof hf, "%slayers.%d.mlp.experts.down_proj", prefix, l);
        const st_tensor *d = safetensors_find(mf->st, hf);
        if (!d)
          return hx_err_set(err, HX_EFORMAT, "%s: \"%s\" is missing", mf->path, hf);
        if ((rc = st_type(mf, d, &ty, err)))
          return rc;
        if (d->n_dims != 3 || d->shape[0] != X || d->shape[1] != E || d->shape[2] != F)
          return hx_err_set(err, HX_EFORMAT, "%s: \"%s\" has an unexpected shape", mf->path, hf);
        rc = add_tensor(mf, name, ty, 3, ne, d->data, d->nbytes, false, err);
        if (rc)
          return rc;
        continue;
      } else {
        for (int64_t x = 0; x < X; x++) {
          snprintf(hf, sizeof hf, "%slayers.%d.mlp.experts.%lld.%s_proj.weight", prefix, l,
                   (long long)x, proj[pi]);
          const st_tensor *s = safetensors_find(mf->st, hf);
          quant_type tx;
          if (!s)
            rc = hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" is missing", mf->path, hf);
          else if (!(rc = st_type(mf, s, &tx, err)) && x > 0 && tx != ty)
            rc = hx_err_set(err, HX_EFORMAT, "%s: experts of layer %d mix dtypes", mf->path, l);
          else if (!rc && (s->n_dims != 2 || s->shape[0] != rows || s->shape[1] != cols))
            rc = hx_err_set(err, HX_EFORMAT, "%s: tensor \"%s\" has an unexpected shape", mf->path,
                            hf);
          if (rc) {
            free(buf);
            return rc;
          }
          if (x == 0) {
            ty = tx;
            eb = quant_type_block_bytes(ty);
            buf = malloc((size_t)(rows * cols) * eb * (size_t)X);
            if (!buf)
              return hx_err_set(err, HX_ENOMEM, "out of memory");
          }
          memcpy(buf + (size_t)x * s->nbytes, s->data, s->nbytes);
        }
      }
      size_t nbytes = (size_t)(rows * cols * X) * eb;
      if ((rc = add_tensor(mf, name, ty, 3, ne, buf, nbytes, true, err))) {
        free(buf);
        return rc;
      }
    }
  }
  return HX_OK;
}

static hx_code read_small_file(const char *path, char **out, size_t *len, hx_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  hx_buf b;
  hx_buf_init(&b, 16 << 20);
  char tmp[8192];
  size_t k;
  hx_code rc = HX_OK;
  while (!rc && (k = fread(tmp, 1, sizeof tmp, fp)) > 0)
    rc = hx_buf_append(&b, tmp, k);
  fclose(fp);
  if (rc) {
    hx_buf_free(&b);
    return hx_err_set(err, rc, "%s: too large", path);
  }
  *len = b.len;
  *out = b.data ? hx_buf_detach(&b) : strdup("");
  return *out ? HX_OK : hx_err_set(err, HX_ENOMEM, "out of memory");
}

static hx_code open_hf(model_file *mf, hx_err *err) {
  char cfg[4096];
  snprintf(cfg, sizeof cfg, "%s/config.json", mf->path);
  char *text = NULL;
  size_t len = 0;
  hx_code rc = read_small_file(cfg, &text, &len, err);
  if (rc)
    return rc;
  rc = model_hparams_from_hf_config(text, len, cfg, &mf->hp, err);
  free(text);
  if (rc || (rc = safetensors_open(mf->path, &mf->st, err)))
    return rc;
  const char *expert_prefix = NULL;
  size_t skipped = 0;
  for (size_t i = 0; i < safetensors_count(mf->st); i++) {
    const st_tensor *s = safetensors_at(mf->st, i);
    const char *n = model_hf_strip_prefix(s->name);
    if (!n) {
      skipped++;
      continue;
    }
    int layer = -1, pos = 0;
    sscanf(n, "layers.%d.%n", &layer, &pos);
    const char *rest = pos ? n + pos : n;
    if (pos && strncmp(rest, "mlp.experts.", 12) == 0) {
      expert_prefix = s->name; /* handled by hf_stack_experts */
      continue;
    }
    if (pos && strcmp(rest, "linear_attn.in_proj_qkvz.weight") == 0) {
      if ((rc = hf_split_qkvz(mf, layer, s, err)))
        return rc;
      continue;
    }
    char name[MODEL_NAME_MAX];
    if (!model_tensor_name_from_hf(mf->hp.arch, s->name, name, sizeof name)) {
      skipped++;
      continue;
    }
    if ((rc = add_st(mf, name, s, err)))
      return rc;
  }
  if (model_arch_is_moe(mf->hp.arch) && expert_prefix) {
    const char *n = model_hf_strip_prefix(expert_prefix);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(n - expert_prefix), expert_prefix);
    if ((rc = hf_stack_experts(mf, prefix, err)))
      return rc;
  }
  if (skipped)
    HX_INFO("%s: %zu tensors not used by the text model (vision/MTP/unknown) skipped", mf->path,
            skipped);
  return hf_transform_values(mf, err);
}

hx_code model_file_open(const char *path, const model_file_opts *opts, model_file **out,
                        hx_err *err) {
  *out = NULL;
  model_file_opts defaults = {0};
  if (!opts)
    opts = &defaults;
  struct stat st;
  if (stat(path, &st) != 0)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  model_file *mf = calloc(1, sizeof *mf);
  if (!mf || !(mf->path = strdup(path))) {
    free(mf);
    return hx_err_set(err, HX_ENOMEM, "out of memory");
  }
  hx_code rc;
  if (S_ISDIR(st.st_mode)) {
    mf->hf_dir = strdup(path);
    rc = mf->hf_dir ? open_hf(mf, err) : hx_err_set(err, HX_ENOMEM, "out of memory");
  } else {
    rc = open_gguf(mf, err);
  }
  if (!rc)
    rc = check_specs(mf, err);
  if (!rc)
    rc = quantize_all(mf, opts, err);
  if (rc) {
    model_file_close(mf);
    return rc;
  }
  *out = mf;
  return HX_OK;
}

void model_file_close(model_file *mf) {
  if (!mf)
    return;
  for (size_t i = 0; i < mf->n; i++)
    if (mf->tensors[i].owned)
      free((void *)mf->tensors[i].data);
  free(mf->tensors);
  free(mf->hash);
  gguf_close(mf->gguf);
  safetensors_close(mf->st);
  free(mf->hf_dir);
  free(mf->path);
  free(mf);
}

const model_hparams *model_file_hparams(const model_file *mf) { return &mf->hp; }
const char *model_file_path(const model_file *mf) { return mf->path; }
const gguf_file *model_file_gguf(const model_file *mf) { return mf->gguf; }
const char *model_file_hf_dir(const model_file *mf) { return mf->hf_dir; }
size_t model_file_tensor_count(const model_file *mf) { return mf->n; }

const model_tensor *model_file_tensor_at(const model_file *mf, size_t i) {
  HX_ASSERT(i < mf->n);
  return &mf->tensors[i];
}

const model_tensor *model_file_tensor(const model_file *mf, const char *name) {
  return find_mut(mf, name);
}

const model_tensor *model_file_layer_tensor(const model_file *mf, int layer, const char *suffix) {
  char name[MODEL_NAME_MAX];
  if ((size_t)snprintf(name, sizeof name, "blk.%d.%s", layer, suffix) >= sizeof name)
    return NULL;
  return find_mut(mf, name);
}

size_t model_file_weight_bytes(const model_file *mf) {
  size_t s = 0;
  for (size_t i = 0; i < mf->n; i++)
    s += mf->tensors[i].nbytes;
  return s;
}

model_token_cost model_file_token_cost(const model_file *mf) {
  const model_hparams *hp = &mf->hp;
  model_token_cost c = {0};
  for (size_t i = 0; i < mf->n; i++) {
    const model_tensor *t = &mf->tensors[i];
    const size_t len = strlen(t->name);
    int layer = -1;
    const bool in_layer = sscanf(t->name, "blk.%d.", &layer) == 1;
    if (in_layer && layer >= hp->n_layer)
      continue; /* MTP layers: in the file, not in the trunk */
    uint64_t elems = 1, bytes = t->nbytes;
    for (int d = 0; d < t->n_dims; d++)
      elems *= (uint64_t)t->ne[d];
    if (strcmp(t->name, "token_embd.weight") == 0 && !hp->tied_embeddings) {
      bytes = t->ne[1] > 0 ? bytes / (uint64_t)t->ne[1] : bytes; /* one row */
    } else if (len > 12 && strcmp(t->name + len - 12, "_exps.weight") == 0 && hp->n_expert > 0) {
      bytes = bytes * (uint64_t)hp->n_expert_used / (uint64_t)hp->n_expert;
      elems = elems * (uint64_t)hp->n_expert_used / (uint64_t)hp->n_expert;
    }
    c.weight_bytes += bytes;
    if (in_layer && t->n_dims >= 2)
      c.layer_macs += elems;
  }
  return c;
}

model_memory_estimate model_file_memory_estimate(const model_file *mf, int n_ctx,
                                                 size_t kv_elem_bytes) {
  const model_hparams *hp = &mf->hp;
  model_memory_estimate e = {.weights_bytes = model_file_weight_bytes(mf)};
  size_t ctx = n_ctx > 0 ? (size_t)n_ctx : 0;
  for (int l = 0; l < hp->n_layer; l++) {
    if (hp->layer_recurrent[l]) {
      size_t conv_ch = 2 * (size_t)hp->ssm_n_group * hp->ssm_d_state + hp->ssm_d_inner;
      e.recurrent_bytes += 4 * ((size_t)(hp->ssm_d_conv - 1) * conv_ch +
                                (size_t)hp->ssm_dt_rank * hp->ssm_d_state * hp->ssm_head_v_dim);
    } else {
      e.kv_cache_bytes +=
          ctx * (size_t)hp->n_head_kv * ((size_t)hp->head_dim_k + hp->head_dim_v) * kv_elem_bytes;
    }
  }
  /* logits + a few activation vectors + attention scores for one sequence */
  size_t ff = (size_t)(hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp);
  e.scratch_bytes =
      4 * ((size_t)hp->n_vocab + 8 * (size_t)hp->n_embd + 3 * ff + ctx * (size_t)hp->n_head);
  e.total_bytes = e.weights_bytes + e.kv_cache_bytes + e.recurrent_bytes + e.scratch_bytes;
  return e;
}
