// vkdev: a Vulkan layer that shows the application one physical device, number $VKDEV_INDEX
// (default 0) of those the drivers list. WebGPU through Dawn takes the first adapter it finds, and
// GPUs of one model share a name, so this is how one process a GPU runs on a host of several
// (scripts/vkdev/README.md). $VKDEV_VERBOSE prints the choice to stderr. $VKDEV_STATS=1 prints, for
// every compute pipeline the application creates, what the driver reports of its compiled code
// (VK_KHR_pipeline_executable_properties: on NVIDIA the registers an invocation), with the entry
// point's name and workgroup size, one line each to stderr; with $VKDEV_IR=DIR as well, the
// driver's internal representations of each pipeline (where it offers any) are written to DIR.
// Build: cc -O2 -shared -fPIC -fvisibility=hidden -o libvkdev.so vkdev.c (Vulkan headers needed).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>
#include <vulkan/vk_layer.h>

#define EXPORT __attribute__((visibility("default")))

static PFN_vkGetInstanceProcAddr next_gipa;
static PFN_vkGetDeviceProcAddr next_gdpa;
static PFN_vkEnumeratePhysicalDevices next_enum;
static VkInstance the_instance;

static const char *ir_dir(void) { const char *s = getenv("VKDEV_IR"); return s && *s ? s : NULL; }
static int stats(void) { const char *s = getenv("VKDEV_STATS"); return (s && *s && strcmp(s, "0")) || ir_dir(); }

static int want(void) { const char *s = getenv("VKDEV_INDEX"); return s ? atoi(s) : 0; }

static VKAPI_ATTR VkResult VKAPI_CALL l_CreateInstance(const VkInstanceCreateInfo *ci, const VkAllocationCallbacks *a, VkInstance *out) {
  VkLayerInstanceCreateInfo *li = (VkLayerInstanceCreateInfo *)ci->pNext;
  while (li && !(li->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && li->function == VK_LAYER_LINK_INFO))
    li = (VkLayerInstanceCreateInfo *)li->pNext;
  if (!li) return VK_ERROR_INITIALIZATION_FAILED;
  next_gipa = li->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  li->u.pLayerInfo = li->u.pLayerInfo->pNext;
  PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_gipa(VK_NULL_HANDLE, "vkCreateInstance");
  VkResult r = create(ci, a, out);
  // resolved here, while the new handle still dispatches to the layers below: once the loader has
  // finished creating it, the handle dispatches to the top of the chain, which is this layer
  if (r == VK_SUCCESS) {
    next_enum = (PFN_vkEnumeratePhysicalDevices)next_gipa(*out, "vkEnumeratePhysicalDevices");
    the_instance = *out;
  }
  return r;
}

// With $VKDEV_STATS: the device is created with VK_KHR_pipeline_executable_properties where the
// driver has it, and every compute pipeline with its statistics captured (l_CreateComputePipelines).
static int have_stats;
static PFN_vkCreateShaderModule next_csm;
static PFN_vkCreateComputePipelines next_ccp;
static PFN_vkGetPipelineExecutablePropertiesKHR next_gpep;
static PFN_vkGetPipelineExecutableStatisticsKHR next_gpes;
static PFN_vkGetPipelineExecutableInternalRepresentationsKHR next_gpeir;

static VKAPI_ATTR VkResult VKAPI_CALL l_CreateDevice(VkPhysicalDevice pd, const VkDeviceCreateInfo *ci, const VkAllocationCallbacks *a, VkDevice *out) {
  VkLayerDeviceCreateInfo *li = (VkLayerDeviceCreateInfo *)ci->pNext;
  while (li && !(li->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && li->function == VK_LAYER_LINK_INFO))
    li = (VkLayerDeviceCreateInfo *)li->pNext;
  if (!li) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr gipa = li->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  next_gdpa = li->u.pLayerInfo->pfnNextGetDeviceProcAddr;
  li->u.pLayerInfo = li->u.pLayerInfo->pNext;
  PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(VK_NULL_HANDLE, "vkCreateDevice");
  if (!stats()) return create(pd, ci, a, out);
  // does the driver have the extension?
  PFN_vkEnumerateDeviceExtensionProperties enumx =
    (PFN_vkEnumerateDeviceExtensionProperties)next_gipa(the_instance, "vkEnumerateDeviceExtensionProperties");
  uint32_t nx = 0;
  int found = 0;
  if (enumx && enumx(pd, NULL, &nx, NULL) == VK_SUCCESS && nx) {
    VkExtensionProperties *xs = calloc(nx, sizeof *xs);
    if (enumx(pd, NULL, &nx, xs) == VK_SUCCESS)
      for (uint32_t i = 0; i < nx; i++) found |= !strcmp(xs[i].extensionName, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    free(xs);
  }
  if (!found) {
    fprintf(stderr, "vkdev-stats: the driver has no %s; no statistics\n", VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    return create(pd, ci, a, out);
  }
  VkDeviceCreateInfo c = *ci;
  const char **names = calloc(ci->enabledExtensionCount + 1, sizeof *names);
  int already = 0;
  for (uint32_t i = 0; i < ci->enabledExtensionCount; i++) {
    names[i] = ci->ppEnabledExtensionNames[i];
    already |= !strcmp(names[i], VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  }
  c.ppEnabledExtensionNames = names;
  if (!already) names[c.enabledExtensionCount++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR feat = {
    VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR, (void *)ci->pNext, VK_TRUE };
  c.pNext = &feat;
  VkResult r = create(pd, &c, a, out);
  free(names);
  if (r == VK_SUCCESS) {
    have_stats = 1;
    next_csm = (PFN_vkCreateShaderModule)next_gdpa(*out, "vkCreateShaderModule");
    next_ccp = (PFN_vkCreateComputePipelines)next_gdpa(*out, "vkCreateComputePipelines");
    next_gpep = (PFN_vkGetPipelineExecutablePropertiesKHR)next_gdpa(*out, "vkGetPipelineExecutablePropertiesKHR");
    next_gpes = (PFN_vkGetPipelineExecutableStatisticsKHR)next_gdpa(*out, "vkGetPipelineExecutableStatisticsKHR");
    next_gpeir = (PFN_vkGetPipelineExecutableInternalRepresentationsKHR)next_gdpa(*out, "vkGetPipelineExecutableInternalRepresentationsKHR");
  }
  return r;
}

// What the statistics line names a module by: its first compute entry point and workgroup size.
#define MAXMOD 4096
static struct { VkShaderModule m; char name[64]; uint32_t x, y, z, words; } mods[MAXMOD];
static uint32_t nmods;

static void describe(const uint32_t *w, size_t words, char *name, uint32_t *x, uint32_t *y, uint32_t *z) {
  uint32_t ep = 0;
  strcpy(name, "?");
  *x = *y = *z = 0;
  for (size_t i = 5; i < words;) {
    uint32_t op = w[i] & 0xffff, len = w[i] >> 16;
    if (len == 0 || i + len > words) break;
    if (op == 15 && len > 3 && w[i + 1] == 5 && !ep) { // OpEntryPoint GLCompute
      ep = w[i + 2];
      snprintf(name, 64, "%.63s", (const char *)&w[i + 3]);
    } else if (op == 16 && len >= 6 && w[i + 2] == 17 && (!ep || w[i + 1] == ep)) { // OpExecutionMode LocalSize
      *x = w[i + 3]; *y = w[i + 4]; *z = w[i + 5];
    }
    i += len;
  }
}

static VKAPI_ATTR VkResult VKAPI_CALL l_CreateShaderModule(VkDevice d, const VkShaderModuleCreateInfo *ci, const VkAllocationCallbacks *a, VkShaderModule *out) {
  VkResult r = next_csm(d, ci, a, out);
  if (r == VK_SUCCESS && nmods < MAXMOD) {
    mods[nmods].m = *out;
    mods[nmods].words = (uint32_t)(ci->codeSize / 4);
    describe(ci->pCode, ci->codeSize / 4, mods[nmods].name, &mods[nmods].x, &mods[nmods].y, &mods[nmods].z);
    nmods++;
  }
  return r;
}

// With $VKDEV_IR: each internal representation of executable e of pipeline number `p` (counted
// from 1 in creation order) to $VKDEV_IR/pipeline-P-E-R.txt (or .bin), its name and size on the
// statistics line.
static uint32_t npipes;
static void save_ir(VkDevice d, const VkPipelineExecutableInfoKHR *ei, uint32_t p, uint32_t e) {
  uint32_t nr = 0;
  if (!next_gpeir || next_gpeir(d, ei, &nr, NULL) != VK_SUCCESS) { fprintf(stderr, " ir=unavailable;"); return; }
  fprintf(stderr, " pipeline=%u; ir=%u;", p, nr);
  if (!nr) return;
  VkPipelineExecutableInternalRepresentationKHR *ir = calloc(nr, sizeof *ir);
  for (uint32_t k = 0; k < nr; k++) ir[k].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR;
  VkResult r = next_gpeir(d, ei, &nr, ir); // the sizes
  for (uint32_t k = 0; k < nr; k++) ir[k].pData = (r == VK_SUCCESS || r == VK_INCOMPLETE) && ir[k].dataSize ? malloc(ir[k].dataSize) : NULL;
  if (r == VK_SUCCESS || r == VK_INCOMPLETE) r = next_gpeir(d, ei, &nr, ir); // the data
  for (uint32_t k = 0; k < nr; k++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/pipeline-%u-%u-%u.%s", ir_dir(), p, e, k, ir[k].isText ? "txt" : "bin");
    fprintf(stderr, " ir%u=%s:%zu", k, ir[k].name, ir[k].dataSize);
    FILE *f = (r == VK_SUCCESS || r == VK_INCOMPLETE) && ir[k].pData ? fopen(path, "wb") : NULL;
    if (f) {
      size_t len = ir[k].dataSize;
      if (ir[k].isText && len && ((char *)ir[k].pData)[len - 1] == 0) len--;
      fwrite(ir[k].pData, 1, len, f);
      fclose(f);
    }
    free(ir[k].pData);
  }
  fprintf(stderr, ";");
  free(ir);
}

static VKAPI_ATTR VkResult VKAPI_CALL l_CreateComputePipelines(VkDevice d, VkPipelineCache pc, uint32_t n, const VkComputePipelineCreateInfo *ci,
                                                               const VkAllocationCallbacks *a, VkPipeline *out) {
  VkComputePipelineCreateInfo *c = calloc(n ? n : 1, sizeof *c);
  for (uint32_t i = 0; i < n; i++) {
    c[i] = ci[i];
    c[i].flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
    if (ir_dir()) c[i].flags |= VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR;
  }
  VkResult r = next_ccp(d, pc, n, c, a, out);
  free(c);
  if (r != VK_SUCCESS) return r;
  for (uint32_t i = 0; i < n; i++) {
    char name[64] = "?";
    uint32_t x = 0, y = 0, z = 0, words = 0;
    for (uint32_t k = nmods; k-- > 0;)
      if (mods[k].m == ci[i].stage.module) { strcpy(name, mods[k].name); x = mods[k].x; y = mods[k].y; z = mods[k].z; words = mods[k].words; break; }
    if (ci[i].stage.module == VK_NULL_HANDLE) {
      for (const VkBaseInStructure *p = ci[i].stage.pNext; p; p = p->pNext)
        if (p->sType == VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO) {
          const VkShaderModuleCreateInfo *m = (const VkShaderModuleCreateInfo *)p;
          words = (uint32_t)(m->codeSize / 4);
          describe(m->pCode, words, name, &x, &y, &z);
        }
    }
    fprintf(stderr, "vkdev-stats: %s workgroup %ux%ux%u, %u SPIR-V words:", name, x, y, z, words);
    VkPipelineInfoKHR pi = { VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, NULL, out[i] };
    uint32_t pno = ++npipes;
    uint32_t ne = 0;
    if (next_gpep(d, &pi, &ne, NULL) == VK_SUCCESS) {
      for (uint32_t e = 0; e < ne; e++) {
        VkPipelineExecutableInfoKHR ei = { VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, NULL, out[i], e };
        uint32_t ns = 0;
        if (next_gpes(d, &ei, &ns, NULL) != VK_SUCCESS || !ns) continue;
        VkPipelineExecutableStatisticKHR *st = calloc(ns, sizeof *st);
        for (uint32_t s = 0; s < ns; s++) st[s].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
        VkResult rs = next_gpes(d, &ei, &ns, st);
        if (rs == VK_SUCCESS || rs == VK_INCOMPLETE) {
          for (uint32_t s = 0; s < ns; s++) {
            fprintf(stderr, " %s=", st[s].name);
            switch (st[s].format) {
              case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR: fprintf(stderr, "%s", st[s].value.b32 ? "true" : "false"); break;
              case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR: fprintf(stderr, "%lld", (long long)st[s].value.i64); break;
              case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR: fprintf(stderr, "%llu", (unsigned long long)st[s].value.u64); break;
              default: fprintf(stderr, "%g", st[s].value.f64);
            }
            fprintf(stderr, ";");
          }
        }
        free(st);
        if (ir_dir()) save_ir(d, &ei, pno, e);
      }
    }
    fprintf(stderr, "\n");
  }
  return r;
}

static VKAPI_ATTR VkResult VKAPI_CALL l_EnumeratePhysicalDevices(VkInstance inst, uint32_t *n, VkPhysicalDevice *out) {
  PFN_vkEnumeratePhysicalDevices next = next_enum;
  uint32_t all = 0;
  VkResult r = next(inst, &all, NULL);
  if (r != VK_SUCCESS) return r;
  VkPhysicalDevice *pds = calloc(all ? all : 1, sizeof *pds);
  r = next(inst, &all, pds);
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) { free(pds); return r; }
  int i = want();
  uint32_t have = (i >= 0 && (uint32_t)i < all) ? 1 : 0;
  if (!have) fprintf(stderr, "vkdev: VKDEV_INDEX is %d, but the driver lists %u device(s): none shown\n", i, all);
  if (!out) { *n = have; free(pds); return VK_SUCCESS; }
  if (have && *n >= 1) { out[0] = pds[i]; *n = 1; }
  else *n = 0;
  free(pds);
  if (have && getenv("VKDEV_VERBOSE")) fprintf(stderr, "vkdev: %u devices, showing index %d\n", all, i);
  return (have && *n == 0) ? VK_INCOMPLETE : VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL l_EnumeratePhysicalDeviceGroups(VkInstance inst, uint32_t *n, VkPhysicalDeviceGroupProperties *out) {
  VkPhysicalDevice keep = VK_NULL_HANDLE;
  uint32_t one = 1;
  if (l_EnumeratePhysicalDevices(inst, &one, &keep) != VK_SUCCESS || one == 0) { *n = 0; return VK_SUCCESS; }
  if (!out) { *n = 1; return VK_SUCCESS; }
  if (*n < 1) return VK_INCOMPLETE;
  out[0].physicalDeviceCount = 1;
  out[0].physicalDevices[0] = keep;
  out[0].subsetAllocation = VK_FALSE;
  *n = 1;
  return VK_SUCCESS;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL l_GetDeviceProcAddr(VkDevice d, const char *name);

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL l_GetInstanceProcAddr(VkInstance inst, const char *name) {
  if (!strcmp(name, "vkGetInstanceProcAddr")) return (PFN_vkVoidFunction)l_GetInstanceProcAddr;
  if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)l_GetDeviceProcAddr;
  if (!strcmp(name, "vkCreateInstance")) return (PFN_vkVoidFunction)l_CreateInstance;
  if (!strcmp(name, "vkCreateDevice")) return (PFN_vkVoidFunction)l_CreateDevice;
  if (!strcmp(name, "vkEnumeratePhysicalDevices")) return (PFN_vkVoidFunction)l_EnumeratePhysicalDevices;
  if (!strcmp(name, "vkEnumeratePhysicalDeviceGroups") || !strcmp(name, "vkEnumeratePhysicalDeviceGroupsKHR"))
    return (PFN_vkVoidFunction)l_EnumeratePhysicalDeviceGroups;
  return next_gipa ? next_gipa(inst, name) : NULL;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL l_GetDeviceProcAddr(VkDevice d, const char *name) {
  if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)l_GetDeviceProcAddr;
  if (have_stats && !strcmp(name, "vkCreateShaderModule")) return (PFN_vkVoidFunction)l_CreateShaderModule;
  if (have_stats && !strcmp(name, "vkCreateComputePipelines")) return (PFN_vkVoidFunction)l_CreateComputePipelines;
  return next_gdpa ? next_gdpa(d, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
  if (v->loaderLayerInterfaceVersion > 2) v->loaderLayerInterfaceVersion = 2;
  v->pfnGetInstanceProcAddr = l_GetInstanceProcAddr;
  v->pfnGetDeviceProcAddr = l_GetDeviceProcAddr;
  v->pfnGetPhysicalDeviceProcAddr = NULL;
  return VK_SUCCESS;
}
