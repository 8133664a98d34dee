// vkdev: a Vulkan layer that shows the application one physical device, number $VKDEV_INDEX
// (default 0) of those the drivers list. WebGPU through Dawn takes the first adapter it finds, and
// GPUs of one model share a name, so this is how one process a GPU runs on a host of several
// (scripts/vkdev/README.md). $VKDEV_VERBOSE prints the choice to stderr.
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
  if (r == VK_SUCCESS) next_enum = (PFN_vkEnumeratePhysicalDevices)next_gipa(*out, "vkEnumeratePhysicalDevices");
  return r;
}

static VKAPI_ATTR VkResult VKAPI_CALL l_CreateDevice(VkPhysicalDevice pd, const VkDeviceCreateInfo *ci, const VkAllocationCallbacks *a, VkDevice *out) {
  VkLayerDeviceCreateInfo *li = (VkLayerDeviceCreateInfo *)ci->pNext;
  while (li && !(li->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && li->function == VK_LAYER_LINK_INFO))
    li = (VkLayerDeviceCreateInfo *)li->pNext;
  if (!li) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr gipa = li->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  next_gdpa = li->u.pLayerInfo->pfnNextGetDeviceProcAddr;
  li->u.pLayerInfo = li->u.pLayerInfo->pNext;
  PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(VK_NULL_HANDLE, "vkCreateDevice");
  return create(pd, ci, a, out);
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
  return next_gdpa ? next_gdpa(d, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
  if (v->loaderLayerInterfaceVersion > 2) v->loaderLayerInterfaceVersion = 2;
  v->pfnGetInstanceProcAddr = l_GetInstanceProcAddr;
  v->pfnGetDeviceProcAddr = l_GetDeviceProcAddr;
  v->pfnGetPhysicalDeviceProcAddr = NULL;
  return VK_SUCCESS;
}
