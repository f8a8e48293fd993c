"""Neural fields of PALM-Net (spec section 5): hash grid, MLPs, geometry/radiance/material networks,
latent codes with PCA, pose encoder and pose correction.
"""

from palm.fields.encoding import HashGridEncoding, active_levels, grid_levels, n_params, to_unit_cube
from palm.fields.geometry import GeometryNetwork
from palm.fields.latent import PCASpace, SubjectCodes, fit_pca, load_pca, save_pca
from palm.fields.material import Material, MaterialNetwork
from palm.fields.mlp import ConditionedMLP, LipschitzMLP, has_weight_norm
from palm.fields.pose import CorrectedParams, PoseCorrection, PoseEncoder
from palm.fields.radiance import RadianceNetwork, reflect
from palm.fields.sh import sh_band_weights, sh_basis

__all__ = [
    "ConditionedMLP",
    "CorrectedParams",
    "GeometryNetwork",
    "HashGridEncoding",
    "LipschitzMLP",
    "Material",
    "MaterialNetwork",
    "PCASpace",
    "PoseCorrection",
    "PoseEncoder",
    "RadianceNetwork",
    "SubjectCodes",
    "active_levels",
    "fit_pca",
    "grid_levels",
    "has_weight_norm",
    "load_pca",
    "n_params",
    "reflect",
    "save_pca",
    "sh_band_weights",
    "sh_basis",
    "to_unit_cube",
]
